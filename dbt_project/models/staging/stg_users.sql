select
    user_id,
    full_name,
    lower(email) as email,
    signup_date,
    city,
    country,
    plan
from {{ ref('users') }}

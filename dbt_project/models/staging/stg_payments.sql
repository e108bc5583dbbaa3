select
    payment_id,
    user_id,
    cast(amount as decimal(10, 2)) as amount,
    paid_at
from {{ ref('payments') }}

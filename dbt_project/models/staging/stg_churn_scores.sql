select
    user_id,
    cast(churn_risk as double) as churn_risk
from {{ ref('churn_scores') }}

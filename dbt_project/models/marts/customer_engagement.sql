-- One row per user with at least one listen: recency, 30-day volume, favourite artist and
-- an engagement tier. Merged into each customer's profile by the customer_engagement sync
-- declared in schema.yml (meta.larder.syncs).

with listens as (
    select * from {{ ref('int_listens_90d') }}
),

per_user as (
    select
        user_id,
        max(listened_at) as last_listened_at,
        count(*) filter (where listened_at >= {{ as_of_timestamp() }} - interval 30 day) as listens_30d
    from listens
    group by user_id
),

favourite as (
    select user_id, artist_name as favourite_artist
    from (
        select
            user_id,
            artist_name,
            row_number() over (partition by user_id order by count(*) desc, artist_name) as artist_rank
        from listens
        group by user_id, artist_name
    )
    where artist_rank = 1
)

select
    cast(p.user_id as integer) as user_id,
    cast(p.last_listened_at as timestamp) as last_listened_at,
    cast(p.listens_30d as integer) as listens_30d,
    cast(f.favourite_artist as varchar) as favourite_artist,
    cast(
        case
            when p.listens_30d >= 30 then 'high'
            when p.listens_30d >= 8 then 'medium'
            else 'low'
        end as varchar
    ) as engagement_tier
from per_user as p
join favourite as f using (user_id)
order by p.user_id

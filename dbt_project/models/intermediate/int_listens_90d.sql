{{ config(materialized='view') }}

-- Listens in the 90 days before the as-of date, with the artist's name and genre.
select
    l.listen_id,
    l.user_id,
    l.listened_at,
    l.seconds_played,
    a.artist_id,
    a.artist_name,
    a.genre
from {{ ref('stg_listens') }} as l
join {{ ref('stg_artists') }} as a using (artist_id)
where l.listened_at >= {{ as_of_timestamp() }} - interval 90 day
  and l.listened_at < {{ as_of_timestamp() }}

select
    listen_id,
    user_id,
    artist_id,
    listened_at,
    seconds_played
from {{ ref('listens') }}

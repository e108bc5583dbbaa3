select
    concert_id,
    artist_id,
    location,
    event_date
from {{ ref('concerts') }}

select
    release_id,
    artist_id,
    title,
    label,
    release_date
from {{ ref('album_releases') }}

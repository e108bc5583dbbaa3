select
    artist_id,
    name as artist_name,
    genre
from {{ ref('artists') }}

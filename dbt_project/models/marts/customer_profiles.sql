-- One row per user: identity, lifetime value, churn risk, a 90-day listening summary and
-- recommendations (concerts, upcoming album release) derived from the user's top genres.
-- "Upcoming" means strictly after the as-of date (var larder_as_of_date).

with users as (
    select * from {{ ref('stg_users') }}
),

listens as (
    select * from {{ ref('int_listens_90d') }}
),

lifetime_value as (
    select user_id, sum(amount) as lifetime_value
    from {{ ref('stg_payments') }}
    group by user_id
),

listen_totals as (
    select user_id, count(*) as num_songs_listened
    from listens
    group by user_id
),

-- top 3 genres / artists: most listens first, ties broken by name
genre_ranks as (
    select
        user_id,
        genre,
        row_number() over (partition by user_id order by count(*) desc, genre) as genre_rank
    from listens
    group by user_id, genre
),

top_genres as (
    select user_id, list(genre order by genre_rank) as top_genres
    from genre_ranks
    where genre_rank <= 3
    group by user_id
),

top_artists as (
    select user_id, list(artist_name order by artist_rank) as top_artists
    from (
        select
            user_id,
            artist_name,
            row_number() over (partition by user_id order by count(*) desc, artist_name) as artist_rank
        from listens
        group by user_id, artist_name
    )
    where artist_rank <= 3
    group by user_id
),

-- artists in each user's top genres
candidate_artists as (
    select g.user_id, a.artist_id, a.artist_name
    from genre_ranks as g
    join {{ ref('stg_artists') }} as a on a.genre = g.genre
    where g.genre_rank <= 3
),

-- up to 2 upcoming concerts in the user's city by artists in their top genres, soonest first
recommended_concerts as (
    select
        user_id,
        list(
            struct_pack(artist := artist_name, location := location, event_date := event_date)
            order by concert_rank
        ) as recommended_concerts
    from (
        select
            ca.user_id,
            ca.artist_name,
            c.location,
            c.event_date,
            row_number() over (
                partition by ca.user_id order by c.event_date, ca.artist_name, c.concert_id
            ) as concert_rank
        from candidate_artists as ca
        join users as u on u.user_id = ca.user_id
        join {{ ref('stg_concerts') }} as c
            on c.artist_id = ca.artist_id
           and c.location = u.city
        where c.event_date > {{ as_of_date() }}
    )
    where concert_rank <= 2
    group by user_id
),

-- the earliest upcoming release by an artist in the user's top genres, ties by title
upcoming_album_release as (
    select
        user_id,
        struct_pack(title := title, artist := artist_name, label := label, release_date := release_date)
            as upcoming_album_release
    from (
        select
            ca.user_id,
            r.title,
            ca.artist_name,
            r.label,
            r.release_date,
            row_number() over (
                partition by ca.user_id order by r.release_date, r.title, r.release_id
            ) as release_rank
        from candidate_artists as ca
        join {{ ref('stg_album_releases') }} as r on r.artist_id = ca.artist_id
        where r.release_date > {{ as_of_date() }}
    )
    where release_rank = 1
)

select
    cast(u.user_id as integer) as user_id,
    u.full_name,
    u.email,
    cast(coalesce(ltv.lifetime_value, 0) as decimal(10, 2)) as lifetime_value,
    cast(cs.churn_risk as double) as churn_risk,
    cast(
        struct_pack(
            num_songs_listened := coalesce(lt.num_songs_listened, 0),
            top_genres := coalesce(tg.top_genres, []),
            top_artists := coalesce(ta.top_artists, [])
        ) as struct(num_songs_listened integer, top_genres varchar[], top_artists varchar[])
    ) as summary_90d,
    cast(
        coalesce(rc.recommended_concerts, [])
        as struct(artist varchar, location varchar, event_date date)[]
    ) as recommended_concerts,
    cast(
        ur.upcoming_album_release
        as struct(title varchar, artist varchar, label varchar, release_date date)
    ) as upcoming_album_release,
    u.country,
    u.plan
from users as u
left join lifetime_value as ltv using (user_id)
left join {{ ref('stg_churn_scores') }} as cs using (user_id)
left join listen_totals as lt using (user_id)
left join top_genres as tg using (user_id)
left join top_artists as ta using (user_id)
left join recommended_concerts as rc using (user_id)
left join upcoming_album_release as ur using (user_id)
order by u.user_id

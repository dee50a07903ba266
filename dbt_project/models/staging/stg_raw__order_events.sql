with

source as (

    select * from {{ source('raw', 'order_events') }}

),

renamed as (

    select

        ----------  ids
        id as event_id,
        order_id,

        ---------- text
        event_type,

        ---------- timestamps
        occurred_at as event_at

    from source

)

select * from renamed

with

source as (

    select * from {{ source('raw', 'orders') }}

),

renamed as (

    select

        ----------  ids
        id as order_id,
        customer_id,

        ---------- text
        status as order_status,

        ---------- numerics
        {{ cents_to_dollars('shipping_cents') }} as shipping_amount,

        ---------- timestamps
        ordered_at,
        cast(ordered_at as date) as order_date

    from source

)

select * from renamed

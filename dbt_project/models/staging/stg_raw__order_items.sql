with

source as (

    select * from {{ source('raw', 'order_items') }}

),

renamed as (

    select

        ----------  ids
        id as order_item_id,
        order_id,
        product_id,

        ---------- numerics
        line_number,
        quantity,
        {{ cents_to_dollars('unit_price_cents') }} as unit_price,
        {{ cents_to_dollars('discount_cents') }} as discount_amount

    from source

)

select * from renamed

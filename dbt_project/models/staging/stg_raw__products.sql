with

source as (

    select * from {{ source('raw', 'products') }}

),

renamed as (

    select

        ----------  ids
        id as product_id,
        sku,

        ---------- text
        name as product_name,
        category as product_category,

        ---------- numerics
        {{ cents_to_dollars('price_cents') }} as product_price,
        {{ cents_to_dollars('cost_cents') }} as product_cost,

        ---------- booleans
        is_active,

        ---------- timestamps
        created_at as product_created_at

    from source

)

select * from renamed

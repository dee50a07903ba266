with

products as (

    select * from {{ ref('stg_raw__products') }}

),

order_items as (

    select * from {{ ref('order_items') }}

),

sales as (

    select
        product_id,
        count(distinct order_id) as order_count,
        sum(quantity) as units_sold,
        sum(net_amount) as net_revenue,
        sum(gross_margin) as gross_margin,
        min(ordered_at) as first_sold_at,
        max(ordered_at) as last_sold_at

    from order_items

    where order_status not in ('cancelled', 'returned')

    group by product_id

),

final as (

    select
        products.product_id,
        products.sku,
        products.product_name,
        products.product_category,
        products.product_price,
        products.product_cost,
        products.product_price - products.product_cost as unit_margin,
        products.is_active,
        coalesce(sales.order_count, 0) as order_count,
        coalesce(sales.units_sold, 0) as units_sold,
        coalesce(sales.net_revenue, 0) as net_revenue,
        coalesce(sales.gross_margin, 0) as gross_margin,
        sales.first_sold_at,
        sales.last_sold_at

    from products

    left join sales
        on products.product_id = sales.product_id

)

select * from final

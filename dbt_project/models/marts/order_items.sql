with

order_items as (

    select * from {{ ref('int_order_items__priced') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

final as (

    select
        order_items.order_item_id,
        order_items.order_id,
        order_items.product_id,
        orders.customer_id,
        orders.ordered_at,
        orders.order_date,
        orders.order_status,
        order_items.line_number,
        order_items.product_name,
        order_items.product_category,
        order_items.quantity,
        order_items.unit_price,
        order_items.gross_amount,
        order_items.discount_amount,
        order_items.net_amount,
        order_items.cost_amount,
        order_items.net_amount - order_items.cost_amount as gross_margin

    from order_items

    inner join orders
        on order_items.order_id = orders.order_id

)

select * from final

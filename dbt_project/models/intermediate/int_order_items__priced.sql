{{ config(materialized='ephemeral') }}

with

order_items as (

    select * from {{ ref('stg_raw__order_items') }}

),

products as (

    select * from {{ ref('stg_raw__products') }}

),

priced as (

    select
        order_items.order_item_id,
        order_items.order_id,
        order_items.product_id,
        order_items.line_number,
        products.product_name,
        products.product_category,
        order_items.quantity,
        order_items.unit_price,
        order_items.quantity * order_items.unit_price as gross_amount,
        order_items.discount_amount,
        order_items.quantity * order_items.unit_price
            - order_items.discount_amount as net_amount,
        order_items.quantity * products.product_cost as cost_amount

    from order_items

    left join products
        on order_items.product_id = products.product_id

)

select * from priced

with

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

order_totals as (

    select * from {{ ref('int_orders__items_summed') }}

),

-- Cancelled and returned orders do not count towards a customer's history.
kept_orders as (

    select
        orders.customer_id,
        orders.ordered_at,
        order_totals.subtotal + orders.shipping_amount as order_total

    from orders

    inner join order_totals
        on orders.order_id = order_totals.order_id

    where orders.order_status not in ('cancelled', 'returned')

),

history as (

    select
        customer_id,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as most_recent_ordered_at,
        count(*) as order_count,
        sum(order_total) as lifetime_spend

    from kept_orders

    group by customer_id

)

select * from history

with

orders as (

    select * from {{ ref('orders') }}

),

daily as (

    select
        order_date as revenue_date,
        count(*) as orders_placed,
        sum(case when order_status = 'cancelled' then 1 else 0 end) as orders_cancelled,
        sum(case when customer_order_number = 1 then 1 else 0 end) as first_orders,
        sum(case when order_status <> 'cancelled' then order_total else 0 end) as gross_revenue,
        sum(case when order_status <> 'cancelled' then discount_amount else 0 end) as discounts,
        sum(amount_refunded) as refunds,
        sum(
            case
                when order_status not in ('cancelled', 'returned') then order_total
                else 0
            end
        ) as net_revenue

    from orders

    group by order_date

)

select * from daily

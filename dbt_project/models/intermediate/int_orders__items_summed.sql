with

order_items as (

    select * from {{ ref('int_order_items__priced') }}

),

summed as (

    select
        order_id,
        count(*) as line_count,
        sum(quantity) as unit_count,
        sum(gross_amount) as gross_amount,
        sum(discount_amount) as discount_amount,
        sum(net_amount) as subtotal,
        sum(cost_amount) as cost_amount

    from order_items

    group by order_id

)

select * from summed

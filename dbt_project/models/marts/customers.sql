with

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

order_history as (

    select * from {{ ref('int_customers__order_history') }}

),

countries as (

    select * from {{ ref('country_codes') }}

),

final as (

    select
        customers.customer_id,
        customers.customer_name,
        customers.email,
        customers.country_code,
        countries.country_name,
        countries.region,
        customers.is_marketing_opt_in,
        customers.signed_up_at,
        order_history.first_ordered_at,
        order_history.most_recent_ordered_at,
        coalesce(order_history.order_count, 0) as lifetime_orders,
        coalesce(order_history.lifetime_spend, 0) as lifetime_spend,
        case
            when order_history.order_count is null then 'prospect'
            when order_history.order_count = 1 then 'new'
            else 'returning'
        end as customer_type

    from customers

    left join order_history
        on customers.customer_id = order_history.customer_id

    left join countries
        on customers.country_code = countries.country_code

)

select * from final

with

customers as (

    select * from {{ ref('customers') }}

),

final as (

    select
        country_code,
        max(country_name) as country_name,
        max(region) as region,
        count(*) as customer_count,
        sum(case when lifetime_orders > 0 then 1 else 0 end) as ordering_customers,
        sum(lifetime_orders) as lifetime_orders,
        sum(lifetime_spend) as lifetime_spend

    from customers

    group by country_code

)

select * from final

with

customers as (

    select * from {{ ref('customers') }}

    where first_ordered_at is not null

),

cohorts as (

    select
        cast({{ dbt.date_trunc('month', 'first_ordered_at') }} as date) as cohort_month,
        count(*) as cohort_size,
        sum(case when customer_type = 'returning' then 1 else 0 end) as returning_customers,
        sum(lifetime_spend) as cohort_lifetime_spend

    from customers

    group by 1

),

final as (

    select
        cohort_month,
        cohort_size,
        returning_customers,
        cast(returning_customers as numeric(16, 4)) / cohort_size as repeat_rate,
        cohort_lifetime_spend,
        cohort_lifetime_spend / cohort_size as avg_lifetime_spend

    from cohorts

)

select * from final

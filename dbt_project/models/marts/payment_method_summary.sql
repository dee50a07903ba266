with

payments as (

    select * from {{ ref('stg_raw__payments') }}

),

final as (

    select
        payment_method,
        count(*) as payment_count,
        count(distinct order_id) as order_count,
        sum(case when payment_status = 'failed' then 1 else 0 end) as failed_count,
        cast(sum(case when payment_status = 'failed' then 1 else 0 end) as numeric(16, 4))
            / count(*) as failure_rate,
        sum(case when payment_status = 'success' then payment_amount else 0 end)
            as amount_collected,
        sum(case when payment_status = 'refunded' then payment_amount else 0 end)
            as amount_refunded

    from payments

    group by payment_method

)

select * from final

with

payments as (

    select * from {{ ref('stg_raw__payments') }}

),

summed as (

    select
        order_id,
        count(*) as payment_attempt_count,
        sum(case when payment_status = 'failed' then 1 else 0 end) as failed_payment_count,
        sum(case when payment_status = 'success' then payment_amount else 0 end) as paid_amount,
        sum(case when payment_status = 'pending' then payment_amount else 0 end) as pending_amount,
        sum(case when payment_status = 'refunded' then payment_amount else 0 end) as refunded_amount,
        sum(
            case
                when payment_status = 'success' and payment_method = 'gift_card'
                    then payment_amount
                else 0
            end
        ) as gift_card_amount,
        max(case when payment_status = 'success' then paid_at end) as last_paid_at

    from payments

    group by order_id

)

select * from summed

with

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

order_totals as (

    select * from {{ ref('int_orders__items_summed') }}

),

payments as (

    select * from {{ ref('int_payments__summed_to_orders') }}

),

milestones as (

    select * from {{ ref('int_order_events__milestones') }}

),

joined as (

    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.order_date,
        orders.order_status,
        coalesce(order_totals.line_count, 0) as line_count,
        coalesce(order_totals.unit_count, 0) as unit_count,
        coalesce(order_totals.discount_amount, 0) as discount_amount,
        coalesce(order_totals.subtotal, 0) as subtotal,
        orders.shipping_amount,
        coalesce(order_totals.subtotal, 0) + orders.shipping_amount as order_total,
        coalesce(order_totals.cost_amount, 0) as cost_amount,
        coalesce(payments.paid_amount, 0) as amount_paid,
        coalesce(payments.pending_amount, 0) as amount_pending,
        coalesce(payments.refunded_amount, 0) as amount_refunded,
        coalesce(payments.failed_payment_count, 0) as failed_payment_count,
        milestones.shipped_at,
        milestones.delivered_at

    from orders

    left join order_totals
        on orders.order_id = order_totals.order_id

    left join payments
        on orders.order_id = payments.order_id

    left join milestones
        on orders.order_id = milestones.order_id

),

final as (

    select
        *,

        -- A refund wins over everything; split payments count in full; an
        -- overpayment still counts as paid.
        case
            when amount_refunded > 0 then 'refunded'
            when amount_paid >= order_total then 'paid'
            when amount_paid > 0 then 'partially_paid'
            when amount_pending > 0 then 'pending'
            else 'unpaid'
        end as payment_status,

        -- Cancelled orders get no number and do not shift the customer's later
        -- orders; ties on ordered_at are broken by order_id.
        case
            when order_status <> 'cancelled' then
                row_number() over (
                    partition by customer_id, order_status = 'cancelled'
                    order by ordered_at, order_id
                )
        end as customer_order_number,

        {{ dbt.datediff('ordered_at', 'shipped_at', 'hour') }} as hours_to_ship,
        {{ dbt.datediff('ordered_at', 'delivered_at', 'day') }} as days_to_deliver

    from joined

)

select * from final

{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns'
    )
}}

with

events as (

    select * from {{ ref('stg_raw__order_events') }}

    {% if is_incremental() %}
    -- Reprocess a trailing three-day window so that late-arriving events are kept.
    where event_at >= (
        select {{ dbt.dateadd('day', -3, 'max(event_at)') }} from {{ this }}
    )
    {% endif %}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

final as (

    select
        events.event_id,
        events.order_id,
        orders.customer_id,
        events.event_type,
        events.event_at,
        cast(events.event_at as date) as event_date,
        events.event_type in (
            'order_delivered', 'order_returned', 'order_cancelled'
        ) as is_terminal_event

    from events

    left join orders
        on events.order_id = orders.order_id

)

select * from final

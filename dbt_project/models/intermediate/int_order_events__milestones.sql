{{ config(materialized='table') }}

with

events as (

    select * from {{ ref('stg_raw__order_events') }}

),

milestones as (

    select
        order_id,
        count(*) as event_count,
        min(case when event_type = 'order_placed' then event_at end) as placed_at,
        min(case when event_type = 'payment_received' then event_at end) as payment_received_at,
        min(case when event_type = 'order_shipped' then event_at end) as shipped_at,
        min(case when event_type = 'order_delivered' then event_at end) as delivered_at,
        min(case when event_type = 'order_returned' then event_at end) as returned_at,
        min(case when event_type = 'order_cancelled' then event_at end) as cancelled_at,
        max(event_at) as last_event_at

    from events

    group by order_id

)

select * from milestones

with

source as (

    select * from {{ source('raw', 'payments') }}

),

renamed as (

    select

        ----------  ids
        id as payment_id,
        order_id,

        ---------- text
        payment_method,
        status as payment_status,

        ---------- numerics
        {{ cents_to_dollars('amount_cents') }} as payment_amount,

        ---------- timestamps
        created_at as paid_at

    from source

)

select * from renamed

"""Deterministic synthetic source data for the example dbt project (schema ``raw``).

Every table is produced by a single DuckDB ``CREATE OR REPLACE TABLE ... AS SELECT``
over ``range(...)``; nothing passes through Python. Pseudo-randomness comes from
``hash(key, 'salt')``, never ``random()``, so the same ``scale`` always yields
byte-identical data. Timestamps span two years ending at a fixed instant.

The *shape* of each order (its status, number of line items, events and payments)
depends only on ``order_id`` through small multiplicative buckets such as
``(order_id * 37) % 100``; the same rules are mirrored in Python so that
:func:`raw_table_row_counts` knows the exact row counts without touching a database.
"""

from __future__ import annotations

from typing import Any

RAW_SCHEMA = "raw"
RAW_TABLES: tuple[str, ...] = (
    "customers",
    "products",
    "orders",
    "order_items",
    "payments",
    "order_events",
)

# Rows per unit of scale.
_CUSTOMERS_PER_SCALE = 1_000
_PRODUCTS_PER_SCALE = 50
_ORDERS_PER_SCALE = 4_000

# Fixed time window: orders from START to END; customers may sign up a year earlier.
_START = "2023-07-01 00:00:00"
_END = "2025-06-30 23:59:59"
_SPAN_S = 730 * 86_400 - 1
_PRE_S = 365 * 86_400

# Order shape rules, shared by the SQL and the Python row counter.
_STATUS_MULT, _CANCELLED_BELOW, _RETURNED_BELOW, _RECENT_PLACED_BELOW = 37, 4, 8, 50
_ITEMS_MULT, _ITEMS_BY_BUCKET = 53, (1, 1, 1, 1, 2, 2, 2, 3, 3, 4)
_PAY_MULT, _RETRY_BELOW, _SPLIT_BELOW = 71, 3, 8
_RECENT_DIVISOR = 100  # the last 1% of orders are still open (placed / shipped)
_PERIOD = 100  # every rule above depends only on order_id % 100

# status -> ordered (event_type, min_offset_minutes, max_offset_minutes); ranges never overlap.
_EVENT_PATHS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "placed": (("order_placed", 0, 0),),
    "shipped": (
        ("order_placed", 0, 0),
        ("payment_received", 1, 30),
        ("order_shipped", 1_440, 4_320),
    ),
    "completed": (
        ("order_placed", 0, 0),
        ("payment_received", 1, 30),
        ("order_shipped", 1_440, 4_320),
        ("order_delivered", 5_760, 10_080),
    ),
    "returned": (
        ("order_placed", 0, 0),
        ("payment_received", 1, 30),
        ("order_shipped", 1_440, 4_320),
        ("order_delivered", 5_760, 10_080),
        ("order_returned", 14_400, 30_240),
    ),
    "cancelled": (("order_placed", 0, 0), ("order_cancelled", 10, 2_880)),
}

_COUNTRIES = (("US", 40), ("GB", 10), ("DE", 8), ("FR", 7), ("CA", 7), ("NL", 5),
              ("AU", 5), ("ES", 4), ("IT", 4), ("JP", 4), ("SE", 3), ("BR", 3))
_FIRST_NAMES = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James",
                "Isabella", "Lucas", "Mia", "Mateo", "Amelia", "Leo", "Harper", "Ethan",
                "Yuki", "Hannah", "Lars", "Chloe", "Diego", "Ingrid", "Omar", "Priya")
_LAST_NAMES = ("Smith", "Johnson", "Garcia", "Muller", "Martin", "Rossi", "Tanaka",
               "Brown", "Silva", "Jansen", "Dubois", "Lopez", "Andersson", "Wilson",
               "Kim", "Novak", "Taylor", "Schmidt", "Moreau", "Clark")
_CATEGORIES = {
    "apparel": ("T-Shirt", "Hoodie", "Cap", "Socks", "Jacket"),
    "accessories": ("Tote Bag", "Water Bottle", "Sticker Pack", "Keychain", "Notebook"),
    "home": ("Mug", "Candle", "Throw Blanket", "Poster", "Coaster Set"),
    "beverages": ("Cold Brew", "Green Tea", "Espresso Beans", "Chai Mix", "Cocoa"),
    "snacks": ("Granola", "Trail Mix", "Dark Chocolate", "Pretzels", "Oat Bars"),
}
_ADJECTIVES = ("Classic", "Organic", "Limited", "Everyday", "Premium", "Vintage", "Mini")
_PAYMENT_METHODS = (("credit_card", 11), ("debit_card", 3), ("paypal", 4), ("bank_transfer", 2))


def _validate_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer (1, 2, ...), got {scale!r}")


def _order_profile(order_id: int, n_orders: int) -> tuple[str, int, int, int]:
    """(status, line items, events, payments) of one order: the Python twin of the SQL."""
    bucket = (order_id * _STATUS_MULT) % 100
    if order_id > n_orders - n_orders // _RECENT_DIVISOR:
        status = "placed" if bucket < _RECENT_PLACED_BELOW else "shipped"
    elif bucket < _CANCELLED_BELOW:
        status = "cancelled"
    elif bucket < _RETURNED_BELOW:
        status = "returned"
    else:
        status = "completed"
    items = _ITEMS_BY_BUCKET[(order_id * _ITEMS_MULT) % len(_ITEMS_BY_BUCKET)]
    two_payments = status in ("shipped", "completed") and (
        (order_id * _PAY_MULT) % 100 < _SPLIT_BELOW
    )
    return status, items, len(_EVENT_PATHS[status]), 2 if two_payments else 1


def raw_table_row_counts(scale: int) -> dict[str, int]:
    """The exact number of rows :func:`write_raw_tables` produces per table at ``scale``.

    Raises ``ValueError`` when ``scale`` is not a positive integer.
    """
    _validate_scale(scale)
    n_orders = _ORDERS_PER_SCALE * scale
    first_recent = n_orders - n_orders // _RECENT_DIVISOR + 1
    totals = [0, 0, 0]  # items, events, payments

    def add(ids: range, times: int = 1) -> None:
        for order_id in ids:
            _, items, events, payments = _order_profile(order_id, n_orders)
            totals[0] += items * times
            totals[1] += events * times
            totals[2] += payments * times

    full_blocks, _ = divmod(first_recent - 1, _PERIOD)  # shapes repeat every 100 ids
    add(range(1, _PERIOD + 1), times=full_blocks)
    add(range(full_blocks * _PERIOD + 1, n_orders + 1))
    return {
        "customers": _CUSTOMERS_PER_SCALE * scale,
        "products": _PRODUCTS_PER_SCALE * scale,
        "orders": n_orders,
        "order_items": totals[0],
        "payments": totals[2],
        "order_events": totals[1],
    }


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _str_list(values: Any) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _h(key: str, salt: str, n: int | str) -> str:
    """SQL for a deterministic pseudo-random BIGINT in [0, n) keyed on ``key``."""
    return f"(hash({key}, '{salt}') % {n})::BIGINT"


def _pick(values: Any, key: str, salt: str) -> str:
    """SQL picking one element of a sequence of strings, keyed on ``key``."""
    values = list(values)
    return f"{_str_list(values)}[1 + {_h(key, salt, len(values))}]"


def _unit(key: str, salt: str) -> str:
    """SQL for a deterministic pseudo-random DOUBLE in [0, 1)."""
    return f"({_h(key, salt, 1_000_000)} / 1000000.0)"


def _statements(scale: int, schema: str) -> dict[str, str]:
    n_cust, n_prod = _CUSTOMERS_PER_SCALE * scale, _PRODUCTS_PER_SCALE * scale
    n_orders = _ORDERS_PER_SCALE * scale
    last_closed = n_orders - n_orders // _RECENT_DIVISOR
    t = {name: f"{_ident(schema)}.{_ident(name)}" for name in RAW_TABLES}
    start, end = f"TIMESTAMP '{_START}'", f"TIMESTAMP '{_END}'"
    countries = [code for code, weight in _COUNTRIES for _ in range(weight)]
    methods = [name for name, weight in _PAYMENT_METHODS for _ in range(weight)]
    nouns = "[" + ", ".join(_str_list(v) for v in _CATEGORIES.values()) + "]"
    cat_idx = f"(1 + {_h('id', 'category', len(_CATEGORIES))})"
    price = f"((5 + {_h('id', 'price', 95)}) * 100 - 1)"
    sb = f"((id * {_STATUS_MULT}) % 100)"
    pb = f"((o.id * {_PAY_MULT}) % 100)"
    n_items = f"{list(_ITEMS_BY_BUCKET)}[1 + (id * {_ITEMS_MULT}) % {len(_ITEMS_BY_BUCKET)}]"
    eligible = (  # customers signed up before the order's time slot starts
        f"greatest(1, floor({n_cust} * ({_PRE_S} + {_SPAN_S} * (id - 1) / {n_orders})"
        f" / {_PRE_S + _SPAN_S})::BIGINT)"
    )
    paths = ", ".join(
        f"('{status}', {seq}, '{event}', {lo}, {hi})"
        for status, steps in _EVENT_PATHS.items()
        for seq, (event, lo, hi) in enumerate(steps)
    )
    return {
        "customers": f"""
            SELECT id, first_name, last_name,
                lower(first_name || '.' || last_name || id || '@example.com') AS email,
                {_pick(countries, 'id', 'country')} AS country_code,
                {_h('id', 'marketing', 3)} = 0 AS accepts_marketing,
                {start} - to_seconds({_PRE_S}) + to_seconds(floor({_PRE_S + _SPAN_S}
                    * (id - 1 + {_unit('id', 'signup')}) / {n_cust})::BIGINT) AS created_at
            FROM (SELECT range + 1 AS id, {_pick(_FIRST_NAMES, 'range', 'first')} AS first_name,
                    {_pick(_LAST_NAMES, 'range', 'last')} AS last_name
                  FROM range({n_cust}))""",
        "products": f"""
            SELECT id, 'SKU-' || lpad(id::VARCHAR, 5, '0') AS sku,
                {_pick(_ADJECTIVES, 'id', 'adjective')} || ' '
                    || {nouns}[{cat_idx}][1 + {_h('id', 'noun', 5)}] AS name,
                {_str_list(_CATEGORIES)}[{cat_idx}] AS category,
                {price} AS price_cents,
                {price} * (35 + {_h('id', 'cost', 30)}) // 100 AS cost_cents,
                {_h('id', 'active', 10)} <> 0 AS is_active,
                {start} - to_days(1 + {_h('id', 'created', 365)}) AS created_at
            FROM (SELECT range + 1 AS id FROM range({n_prod}))""",
        "orders": f"""
            SELECT id, 1 + (hash(id, 'customer') % {eligible})::BIGINT AS customer_id,
                {start} + to_seconds(floor({_SPAN_S}
                    * (id - 1 + {_unit('id', 'ordered_at')}) / {n_orders})::BIGINT) AS ordered_at,
                CASE WHEN id > {last_closed} THEN
                        CASE WHEN {sb} < {_RECENT_PLACED_BELOW} THEN 'placed' ELSE 'shipped' END
                    WHEN {sb} < {_CANCELLED_BELOW} THEN 'cancelled'
                    WHEN {sb} < {_RETURNED_BELOW} THEN 'returned'
                    ELSE 'completed' END AS status,
                [0, 0, 499, 799][1 + {_h('id', 'shipping', 4)}] AS shipping_cents
            FROM (SELECT range + 1 AS id FROM range({n_orders}))""",
        "order_items": f"""
            SELECT row_number() OVER (ORDER BY s.order_id, s.seq) AS id, s.order_id,
                s.seq + 1 AS line_number, p.id AS product_id, s.quantity,
                p.price_cents AS unit_price_cents,
                CASE WHEN {_h('s.order_id, s.seq', 'discount', 100)} < 15
                    THEN s.quantity * p.price_cents * (10 + 10 * (s.order_id % 2)) // 100
                    ELSE 0 END AS discount_cents
            FROM (
                SELECT order_id, seq, [1, 1, 1, 1, 1, 2, 2, 3][1 + {_h('order_id, seq', 'qty', 8)}]
                        AS quantity,
                    1 + floor({n_prod} * pow({_unit('order_id, seq', 'product')}, 2))::BIGINT
                        AS product_id  -- squared: low ids are the best sellers
                FROM (SELECT id AS order_id, unnest(range({n_items})) AS seq FROM {t['orders']})
            ) AS s
            JOIN {t['products']} AS p ON p.id = s.product_id""",
        "order_events": f"""
            SELECT row_number() OVER (ORDER BY o.id, p.seq) AS id, o.id AS order_id,
                p.event_type,
                least({end}, o.ordered_at + to_minutes(
                    p.lo + {_h('o.id, p.seq', 'event', '(p.hi - p.lo + 1)')})) AS occurred_at
            FROM {t['orders']} AS o
            JOIN (VALUES {paths}) AS p(status, seq, event_type, lo, hi) ON p.status = o.status""",
        "payments": f"""
            WITH totals AS (
                SELECT order_id, sum(quantity * unit_price_cents - discount_cents) AS items_cents
                FROM {t['order_items']} GROUP BY order_id
            ), base AS (
                SELECT o.id AS order_id, o.status AS order_status, o.ordered_at,
                    tt.items_cents + o.shipping_cents AS total_cents, {pb} AS bucket,
                    o.status IN ('shipped', 'completed') AND {pb} < {_SPLIT_BELOW} AS two_rows,
                    {_pick(methods, 'o.id', 'method')} AS method
                FROM {t['orders']} AS o JOIN totals AS tt ON tt.order_id = o.id
            ), attempts AS (
                SELECT order_id, 1 AS attempt, ordered_at,
                    CASE WHEN two_rows AND bucket >= {_RETRY_BELOW} THEN 'gift_card'
                        ELSE method END AS payment_method,
                    CASE WHEN order_status = 'placed' THEN 'pending'
                        WHEN order_status IN ('cancelled', 'returned') THEN 'refunded'
                        WHEN two_rows AND bucket < {_RETRY_BELOW} THEN 'failed'
                        ELSE 'success' END AS status,
                    CASE WHEN two_rows AND bucket >= {_RETRY_BELOW}
                        THEN least(2500, total_cents // 2) ELSE total_cents END AS amount_cents
                FROM base
                UNION ALL  -- the retry after a failed attempt, or the rest of a split payment
                SELECT order_id, 2, ordered_at, method, 'success',
                    CASE WHEN bucket >= {_RETRY_BELOW}
                        THEN total_cents - least(2500, total_cents // 2) ELSE total_cents END
                FROM base WHERE two_rows
            )
            SELECT row_number() OVER (ORDER BY order_id, attempt) AS id, order_id,
                payment_method, status, amount_cents::BIGINT AS amount_cents,
                ordered_at + to_seconds(300 * (attempt - 1)
                    + {_h('order_id, attempt', 'paid', 300)}) AS created_at
            FROM attempts""",
    }


def write_raw_tables(conn: Any, *, scale: int = 1, schema: str = RAW_SCHEMA) -> dict[str, int]:
    """(Re)create every table in ``RAW_TABLES`` inside ``schema`` and return their row counts.

    ``conn`` is an open DuckDB connection (ours or DuckDB's own); for another warehouse
    see ``demo/load.py``. The data is a pure function of
    ``scale`` (a positive integer multiplier: 1 gives 4,000 orders). Raises
    ``ValueError`` for a scale below 1.
    """
    _validate_scale(scale)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}")
    statements = _statements(scale, schema)
    counts: dict[str, int] = {}
    # Dependency order: orders need customers; items need orders and products; ...
    for table in ("customers", "products", "orders", "order_items", "order_events", "payments"):
        relation = f"{_ident(schema)}.{_ident(table)}"
        conn.execute(f"CREATE OR REPLACE TABLE {relation} AS {statements[table]}")
        counts[table] = conn.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
    return {table: counts[table] for table in RAW_TABLES}


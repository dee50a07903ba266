{# Convert an integer amount in cents to a decimal amount in dollars. #}
{% macro cents_to_dollars(column_name, scale=2) -%}
    cast(({{ column_name }}) / 100.0 as numeric(16, {{ scale }}))
{%- endmacro %}

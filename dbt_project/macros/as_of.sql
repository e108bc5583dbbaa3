{#- The snapshot date of the demo data (var larder_as_of_date), as a DATE / TIMESTAMP literal. -#}
{% macro as_of_date() -%}
    cast('{{ var("larder_as_of_date") }}' as date)
{%- endmacro %}

{% macro as_of_timestamp() -%}
    cast('{{ var("larder_as_of_date") }}' as timestamp)
{%- endmacro %}

//! Tests of the price table and costs.

use super::*;

#[test]
fn the_builtin_table_has_its_date_and_the_common_models() {
    let table = PriceTable::builtin();
    assert_eq!(table.as_of().len(), 10);
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
        "claude-3-7-sonnet",
        "claude-3-5-haiku",
        "claude-haiku-4-5",
    ] {
        let (_, source) = table
            .price(model)
            .unwrap_or_else(|| panic!("{model} priced"));
        assert_eq!(source, PriceSource::Builtin);
    }
}

#[test]
fn dated_snapshots_take_the_longest_prefix() {
    let table = PriceTable::builtin();
    let input = |model: &str| table.price(model).map(|(p, _)| p.input_per_mtok);
    assert_eq!(input("gpt-4o-2024-08-06"), Some(2.50));
    assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
    assert_eq!(input("GPT-4.1-MINI-2025-04-14"), Some(0.40));
    assert_eq!(input("claude-sonnet-4-5-20250929"), Some(3.00));
    assert_eq!(input("claude-opus-4-1-20250805"), Some(15.00));
    assert_eq!(input("claude-3-5-haiku-20241022"), Some(0.80));
    assert_eq!(input("openai/gpt-4o-mini"), Some(0.15));
    assert_eq!(input("llama-3.1-70b"), None);
}

#[test]
fn our_shape_overrides_and_extends() {
    let mut table = PriceTable::builtin();
    table
        .merge_yaml(
            "as_of: 2026-11-15\nprices:\n  gpt-4o: {input: 2.0, output: 8}\n  \
             my-model: {input: 1, output: 2, cached_input: 0.5, cache_write: 1.5}\n",
        )
        .unwrap();
    let (price, source) = table.price("gpt-4o-2024-11-20").unwrap();
    assert_eq!(
        (price.input_per_mtok, price.cached_input_per_mtok),
        (2.0, None)
    );
    assert_eq!(source, PriceSource::Config);
    let (price, _) = table.price("my-model").unwrap();
    assert_eq!(
        *price,
        Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: Some(0.5),
            cache_write_per_mtok: Some(1.5),
        }
    );
    assert_eq!(table.price("gpt-4o-mini").unwrap().1, PriceSource::Builtin);
    assert_eq!(table.as_of(), PriceTable::builtin().as_of());
}

#[test]
fn the_seed_shape_is_per_thousand_tokens() {
    let mut table = PriceTable::builtin();
    let doc: Value =
        serde_yaml_ng::from_str("model_pricing:\n  local-llama: {input: 0.0005, output: 0.0015}\n")
            .unwrap();
    table.merge_value(&doc).unwrap();
    let (price, source) = table.price("local-llama").unwrap();
    assert_eq!((price.input_per_mtok, price.output_per_mtok), (0.5, 1.5));
    assert_eq!(source, PriceSource::Config);
}

#[test]
fn bad_tables_name_what_is_wrong_and_change_nothing() {
    let mut table = PriceTable::builtin();
    let err = |yaml: &str, table: &mut PriceTable| table.merge_yaml(yaml).unwrap_err().to_string();
    assert_eq!(
        err(
            "prices:\n  ok: {input: 1, output: 1}\n  gpt-x: {input: 1}\n",
            &mut table
        ),
        "price table: `prices.gpt-x.output`: missing"
    );
    assert!(table.price("ok").is_none());
    assert_eq!(
        err("prices:\n  gpt-x: {input: -1, output: 1}\n", &mut table),
        "price table: `prices.gpt-x.input`: expected a number, 0 or more"
    );
    assert_eq!(
        err(
            "prices:\n  gpt-x: {input: 1, output: 1, cahced_input: 1}\n",
            &mut table
        ),
        "price table: `prices.gpt-x.cahced_input`: unknown price key"
    );
    assert_eq!(
        err(
            "model_pricing:\n  gpt-x: {input: 1, output: 1, cached_input: 1}\n",
            &mut table
        ),
        "price table: `model_pricing.gpt-x.cached_input`: unknown price key"
    );
    assert_eq!(
        err("pricing: {}\n", &mut table),
        "price table: `pricing`: unknown key (expected `as_of`, `prices` or `model_pricing`)"
    );
    assert_eq!(
        err("as_of: soon\n", &mut table),
        "price table: `as_of`: expected a date, YYYY-MM-DD"
    );
    assert!(err("prices: [", &mut table).starts_with("price table is not valid YAML"));
}

#[test]
fn openai_costs_count_cached_input_inside_input() {
    let price = *PriceTable::builtin().price("gpt-4o-mini").unwrap().0;
    let usage = Usage {
        input_tokens: 1000,
        output_tokens: 500,
        cache_read_tokens: 200,
        ..Usage::default()
    };
    // 800 × $0.15 + 200 × $0.075 + 500 × $0.60, per million.
    assert_eq!(cost("openai", &usage, &price), 0.000435);
    let uncached = Price {
        cached_input_per_mtok: None,
        ..price
    };
    assert_eq!(cost("openai-compatible", &usage, &uncached), 0.00045);
}

#[test]
fn anthropic_costs_count_cache_apart_from_input() {
    let price = *PriceTable::builtin().price("claude-sonnet-4-5").unwrap().0;
    let usage = Usage {
        input_tokens: 100,
        output_tokens: 1000,
        cache_read_tokens: 10_000,
        cache_creation_tokens: 2000,
        reasoning_tokens: 0,
    };
    // 100 × $3 + 10000 × $0.30 + 2000 × $3.75 + 1000 × $15, per million.
    assert_eq!(cost("anthropic", &usage, &price), 0.0258);
    let bare = Price {
        cached_input_per_mtok: None,
        cache_write_per_mtok: None,
        ..price
    };
    // Unpriced cache: reads at a tenth of input, writes at 1.25×.
    assert_eq!(cost("anthropic", &usage, &bare), 0.0258);
}

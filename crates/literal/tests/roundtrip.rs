use edeploy_literal::{parse, parse_named, to_python, to_python_compact, Value};
use proptest::prelude::*;

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

#[test]
fn scalars() {
    assert_eq!(parse("'a'").unwrap(), s("a"));
    assert_eq!(parse("\"a\"").unwrap(), s("a"));
    assert_eq!(parse("u'x'").unwrap(), s("x"));
    assert_eq!(parse("r'a\\d'").unwrap(), s("a\\d"));
    assert_eq!(parse("'a' 'b'").unwrap(), s("ab"));
    assert_eq!(parse("'\\x41\\u00e9\\n\\'\\101'").unwrap(), s("Aé\n'A"));
    assert_eq!(
        parse("'\\d'").unwrap(),
        s("\\d"),
        "unknown escapes are kept, as in Python"
    );
    assert_eq!(parse("42").unwrap(), Value::Int(42));
    assert_eq!(parse("-3").unwrap(), Value::Int(-3));
    assert_eq!(parse("0x1F").unwrap(), Value::Int(31));
    assert_eq!(parse("1_000").unwrap(), Value::Int(1000));
    assert_eq!(parse("1200.00").unwrap(), Value::Float(1200.0));
    assert_eq!(parse("1e3").unwrap(), Value::Float(1000.0));
    assert_eq!(parse(".5").unwrap(), Value::Float(0.5));
    assert_eq!(parse("True").unwrap(), Value::Bool(true));
    assert_eq!(parse("False").unwrap(), Value::Bool(false));
    assert_eq!(parse("None").unwrap(), Value::None);
}

#[test]
fn containers_comments_and_trailing_commas() {
    let v = parse(
        "# profile\n[\n  ('disk', '$disk', 'size', 'gt(10)'),  # first\n  ('a', 'b', 'c', 'd',),\n]\n",
    )
    .unwrap();
    assert_eq!(
        v,
        Value::List(vec![
            Value::Tuple(vec![s("disk"), s("$disk"), s("size"), s("gt(10)")]),
            Value::Tuple(vec![s("a"), s("b"), s("c"), s("d")]),
        ])
    );
    assert_eq!(
        parse("('x')").unwrap(),
        s("x"),
        "parentheses alone make no tuple"
    );
    assert_eq!(parse("('x',)").unwrap(), Value::Tuple(vec![s("x")]));
    assert_eq!(parse("()").unwrap(), Value::Tuple(vec![]));
    assert_eq!(parse("{}").unwrap(), Value::Dict(vec![]));
    assert_eq!(
        parse("{'a': 1, 'b': [1, 2,],}").unwrap(),
        Value::Dict(vec![
            (s("a"), Value::Int(1)),
            (s("b"), Value::List(vec![Value::Int(1), Value::Int(2)]))
        ])
    );
}

#[test]
fn generate_call_is_kept_not_run() {
    let v = parse("generate({'ip': '10.0.0.1-3'}, '=')").unwrap();
    match v {
        Value::Call(call) => {
            let edeploy_literal::Call { name, args } = *call;
            assert_eq!(name, "generate");
            assert_eq!(args.len(), 2);
            assert_eq!(args[1], s("="));
        }
        other => panic!("not a call: {other:?}"),
    }
}

#[test]
fn errors_name_file_line_and_column() {
    let e = parse_named("[\n ('a', 'b'),\n ('c' 'd', ]\n", "x.specs").unwrap_err();
    assert_eq!(e.file, "x.specs");
    assert_eq!((e.line, e.col), (3, 12), "{e}");
    assert!(
        e.to_string()
            .starts_with("x.specs:3:12: unexpected `]`; expected"),
        "{e}"
    );
    let e = parse_named("[1, 2", "f").unwrap_err();
    assert_eq!(e.line, 1);
    let e = parse_named("__import__('os').system('id')", "evil").unwrap_err();
    assert_eq!(
        (e.line, e.col),
        (1, 17),
        "a call's result is never indexed or called: {e}"
    );
    assert!(parse("'unterminated").is_err());
    assert!(parse("99999999999999999999").is_err());
    // Nested parentheses once took exponential time (the fuzzer's find): 60 levels must be quick.
    let start = std::time::Instant::now();
    let nested = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(parse(&nested).unwrap(), Value::Int(1));
    let nested = format!("{}1{}", "(".repeat(60), ",)".repeat(60));
    assert!(parse(&nested).is_ok());
    assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
    let deep = "[".repeat(100_000);
    let e = parse_named(&deep, "deep").unwrap_err();
    assert!(e.message.contains("nesting"), "{e}");
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-1e12f64..1e12).prop_map(Value::Float),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Tuple),
            prop::collection::vec((any::<String>().prop_map(Value::from), inner), 0..4)
                .prop_map(Value::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn written_values_read_back(v in arb_value()) {
        prop_assert_eq!(parse(&to_python(&v)).unwrap(), v.clone());
        prop_assert_eq!(parse(&to_python_compact(&v)).unwrap(), v);
    }
}

#[test]
fn scalar_positions_in_document_order() {
    let (_, pos) = edeploy_literal::parse_located("[('a', 1),\n  ('b', None)]", "f").unwrap();
    assert_eq!(pos, vec![(1, 3), (1, 8), (2, 4), (2, 9)]);
}

use edeploy_literal::Value;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let text = "generate({'ip': '10.0.0-39.0-249', 'hostname': 'host00001-10000', 'gateway': '10.0.0.1', 'netmask': '255.255.0.0'})";
    let args = match edeploy_literal::parse(text).unwrap() {
        Value::Call(c) => c.args,
        _ => panic!(),
    };
    for _ in 0..200 {
        let r = edeploy_spec::generate::generate_call(&args).unwrap();
        std::hint::black_box(&r);
    }
}

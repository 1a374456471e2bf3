//! Stand-in for `edeploy-server index` until the server wires trees in, and a helper for
//! benchmarks: `tree_tool index STORE TREE VERSION ROLE [KEYFILE]`, `tree_tool keygen KEYFILE`
//! (prints the public key), `tree_tool install STORE VERSION ROLE ROOT`,
//! `tree_tool verify ROOT MANIFEST [--full]`.

use std::path::Path;
use std::time::Instant;

use edeploy_tree::manifest::{self, hex, Manifest};
use edeploy_tree::source::LocalSource;
use edeploy_tree::store::Store;
use edeploy_tree::{install, verify};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    match a.first().map(String::as_str) {
        Some("index") if a.len() >= 5 => {
            let key = a
                .get(5)
                .map(|k| manifest::read_signing_key(Path::new(k)))
                .transpose()?;
            let (m, h) = Store::new(&a[1]).index(Path::new(&a[2]), &a[3], &a[4], key.as_ref())?;
            eprintln!("{} entries, manifest {}", m.entries.len(), hex(&h));
        }
        Some("keygen") if a.len() == 2 => {
            let k = manifest::generate_signing_key()?;
            std::fs::write(&a[1], hex(&k.to_bytes()))?;
            println!("{}", hex(k.verifying_key().as_bytes()));
        }
        Some("install") if a.len() == 5 => {
            let (m, _) = install::install(
                &LocalSource::new(&a[1]),
                &a[2],
                &a[3],
                Path::new(&a[4]),
                &install::Options::default(),
            )?;
            eprintln!("{} entries installed", m.entries.len());
        }
        Some("verify") if a.len() >= 3 => {
            let m = Manifest::from_bytes(&std::fs::read(&a[2])?)?;
            let opts = verify::Options {
                full: a.get(3).is_some_and(|f| f == "--full"),
                ..Default::default()
            };
            for d in verify::verify(Path::new(&a[1]), &m, &opts)? {
                println!("{d}");
            }
        }
        _ => {
            eprintln!("usage: tree_tool index STORE TREE VERSION ROLE [KEYFILE] | keygen KEYFILE | install STORE VERSION ROLE ROOT | verify ROOT MANIFEST [--full]");
            std::process::exit(2);
        }
    }
    eprintln!("{:.3}s", t.elapsed().as_secs_f64());
    Ok(())
}

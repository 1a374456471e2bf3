//! `edeploy-server image` then the image fetched over the real `serve` at
//! `/trees/images/<role>-<version>.edeploy` and installed by the tree crate's streaming reader.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, request, serve};
use edeploy_tree::image::{self, InstallOptions};
use edeploy_tree::manifest;

fn setup(dir: &Path) -> PathBuf {
    let conf = common::tree_conf(dir);
    let t = dir.join("install/1/base");
    fs::create_dir_all(t.join("etc")).unwrap();
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::write(t.join("etc/motd"), "version 1\n").unwrap();
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(t.join("usr/bin/big"), &big).unwrap();
    fs::set_permissions(t.join("usr/bin/big"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(t.join("usr/bin/big"), t.join("usr/bin/big2")).unwrap();
    std::os::unix::fs::symlink("big", t.join("usr/bin/link")).unwrap();
    conf
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

#[test]
fn image_command_then_fetch_over_serve() {
    let t = tempfile::tempdir().unwrap();
    let conf = setup(t.path());
    let c = conf.to_str().unwrap();
    let o = run(&["image", "--config", c, "1", "base"]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("base-1.edeploy: 1/base 7 entries"), "{out}");
    let img = t.path().join("store/images/base-1.edeploy");
    assert!(img.is_file());

    let (_srv, addr) = serve(&["--config", c], t.path());
    let r = request(addr, "GET", "/trees/images/base-1.edeploy", "", b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, fs::read(&img).unwrap());

    // Streamed from the server into a root: the same files, owners and modes.
    let url = format!("http://{addr}/trees/images/base-1.edeploy");
    let root = t.path().join("root");
    let (m, _) = image::install_image(
        image::open(&url).unwrap(),
        &root,
        &InstallOptions {
            expect: Some(("1", "base")),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.entries.len(), 7);
    assert_eq!(
        fs::read(root.join("usr/bin/big2")).unwrap(),
        fs::read(t.path().join("install/1/base/usr/bin/big")).unwrap()
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/link")).unwrap(),
        Path::new("big")
    );
    let v = edeploy_tree::verify::verify(
        &root,
        &m,
        &edeploy_tree::verify::Options {
            full: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(v.is_empty(), "{v:?}");

    // Absent image: a clear not-found.
    assert!(matches!(
        image::open(&format!("http://{addr}/trees/images/base-9.edeploy")),
        Err(edeploy_tree::Error::NotFound(_))
    ));
}

#[test]
fn signed_image_to_output_and_bad_names() {
    let t = tempfile::tempdir().unwrap();
    let conf = setup(t.path());
    let c = conf.to_str().unwrap();
    let k = manifest::generate_signing_key().unwrap();
    let keyfile = t.path().join("key");
    fs::write(&keyfile, manifest::hex(k.as_bytes())).unwrap();
    let out = t.path().join("x.edeploy");
    let o = run(&[
        "image",
        "--config",
        c,
        "--key",
        keyfile.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "1",
        "base",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("signed"));
    let vk = k.verifying_key();
    image::install_image(
        image::open(out.to_str().unwrap()).unwrap(),
        &t.path().join("root"),
        &InstallOptions {
            key: Some(&vk),
            ..Default::default()
        },
    )
    .unwrap();

    for (v, r) in [("1", "../base"), ("2", "base"), (".1", "base")] {
        let o = run(&["image", "--config", c, v, r]);
        assert_eq!(o.status.code(), Some(2), "{v} {r}: {o:?}");
    }
    assert!(!t.path().join("store/images").exists());
}

//! The configure script sent back to a matched machine (DESIGN §3): a POSIX `sh` prologue that sets
//! the variables and defines the helpers, then the profile's own `.configure`.
//!
//! Files the prologue's helpers write in the initrd (stable: the initrd reads them back), all under
//! `$EDEPLOY_ROOT` (empty in the initrd, a temp dir in tests):
//! - `/vars.json`: every variable, names and values as JSON strings (or JSON for non-scalars);
//! - `/role`: `ROLE=…`, `VERS=…`, `DISK=…` lines written by `set_role ROLE VERSION DISK`
//!   (raw values, one per line, no quoting);
//! - `/post_rsync/PATH`: written by `config PATH [MODE]` from its stdin;
//! - `/grub_options`: one line per `grub_options ARGS` call, joined with spaces by the reader.

use edeploy_literal::Value;

/// Quotes a value for `sh`: single quotes, with `'\''` for an embedded quote.
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Names a profile may not overwrite as shell variables: they would change how the script itself
/// runs. They still reach the script through `/vars.json`.
const RESERVED: &[&str] = &[
    "PATH",
    "IFS",
    "ENV",
    "CDPATH",
    "HOME",
    "SHELL",
    "PS1",
    "PS2",
    "PS4",
    "OPTIND",
    "OPTARG",
    "EDEPLOY_ROOT",
];

/// A shell identifier that can be assigned safely.
pub fn shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&name)
}

fn value_text(v: &Value) -> String {
    v.scalar_text().unwrap_or_else(|| v.to_json().to_string())
}

const HELPERS: &str = r#": "${EDEPLOY_ROOT:=}"
run() {
    echo "edeploy: run: $*" >&2
    "$@"
}
set_role() {
    if [ $# -ne 3 ]; then
        echo "edeploy: usage: set_role ROLE VERSION DISK" >&2
        exit 1
    fi
    case "$1$2$3" in
    *'
'*) echo "edeploy: set_role: newline in an argument" >&2; exit 1 ;;
    esac
    ROLE="$1"
    VERS="$2"
    DISK="$3"
    printf 'ROLE=%s\nVERS=%s\nDISK=%s\n' "$ROLE" "$VERS" "$DISK" > "$EDEPLOY_ROOT/role"
}
config() {
    case "$1" in
    /*) ;;
    *) echo "edeploy: config: path must be absolute: $1" >&2; exit 1 ;;
    esac
    case "/$1/" in
    */../*) echo "edeploy: config: '..' in path: $1" >&2; exit 1 ;;
    esac
    mkdir -p "$EDEPLOY_ROOT/post_rsync$(dirname "$1")"
    cat > "$EDEPLOY_ROOT/post_rsync$1"
    if [ -n "$2" ]; then
        chmod "$2" "$EDEPLOY_ROOT/post_rsync$1"
    fi
}
grub_options() {
    printf '%s\n' "$*" >> "$EDEPLOY_ROOT/grub_options"
}
"#;

/// Renders the configure script for `profile` with `vars`, `extra` (PXEMNGR_URL, METADATA_URL) and
/// the profile's script text.
pub fn render(
    profile: &str,
    vars: &[(String, Value)],
    extra: &[(&str, &str)],
    configure: &str,
) -> String {
    let mut out = String::with_capacity(2048 + configure.len());
    out.push_str("#!/bin/sh\n");
    // The profile name is a safe file name, but may hold a newline-free oddity: keep it one line.
    out.push_str(&format!(
        "# EDEPLOY_PROFILE={}\nset -e\n",
        profile.replace(['\n', '\r'], " ")
    ));
    let mut json = serde_json::Map::new();
    for (k, v) in vars {
        json.insert(k.clone(), v.to_json());
    }
    for (k, v) in extra {
        json.insert(
            (*k).to_string(),
            serde_json::Value::String((*v).to_string()),
        );
    }
    for (k, v) in vars {
        if shell_name(k) {
            out.push_str(&format!("{k}={}\n", sh_quote(&value_text(v))));
        }
    }
    for (k, v) in extra {
        out.push_str(&format!("{k}={}\n", sh_quote(v)));
    }
    out.push_str(HELPERS);
    // Compact JSON is one line and starts with `{`, so it can never equal the here-doc delimiter.
    out.push_str("cat > \"$EDEPLOY_ROOT/vars.json\" <<'EDEPLOY_VARS_JSON'\n");
    out.push_str(&serde_json::Value::Object(json).to_string());
    out.push_str("\nEDEPLOY_VARS_JSON\n");
    out.push_str("# --- profile script ---\n");
    out.push_str(configure);
    if !configure.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The body sent with an error status: an old client that just runs the body fails loudly too.
pub fn failure(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "#!/bin/sh\necho {} >&2\nexit 1\n",
        sh_quote(&format!("edeploy: {line}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert!(shell_name("disk1") && shell_name("_x"));
        assert!(!shell_name("1x") && !shell_name("a-b") && !shell_name("PATH") && !shell_name(""));
    }

    #[test]
    fn script_runs_under_sh_and_writes_the_documented_files() {
        let d = tempfile::tempdir().unwrap();
        let vars = vec![
            ("disk".to_string(), Value::Str("vda".into())),
            (
                "evil".to_string(),
                Value::Str("$(touch pwned)'; echo `x`".into()),
            ),
            ("not-an-ident".to_string(), Value::Str("v".into())),
            ("n".to_string(), Value::Int(3)),
        ];
        let script = render(
            "vm",
            &vars,
            &[("PXEMNGR_URL", "http://p/")],
            "set_role base 1.0 \"/dev/$disk\"\n\
             echo hello | config /etc/motd 600\n\
             grub_options console=ttyS0 quiet\n\
             printf '%s|%s|%s\\n' \"$evil\" \"$n\" \"$PXEMNGR_URL\" > \"$EDEPLOY_ROOT/out\"",
        );
        assert!(script.starts_with("#!/bin/sh\n# EDEPLOY_PROFILE=vm\nset -e\n"));
        let st = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("EDEPLOY_ROOT", d.path())
            .current_dir(d.path())
            .status()
            .unwrap();
        assert!(st.success());
        let read = |p: &str| std::fs::read_to_string(d.path().join(p)).unwrap();
        assert_eq!(read("role"), "ROLE=base\nVERS=1.0\nDISK=/dev/vda\n");
        assert_eq!(read("post_rsync/etc/motd"), "hello\n");
        assert_eq!(read("grub_options"), "console=ttyS0 quiet\n");
        assert_eq!(read("out"), "$(touch pwned)'; echo `x`|3|http://p/\n");
        assert!(!d.path().join("pwned").exists());
        let json: serde_json::Value = serde_json::from_str(&read("vars.json")).unwrap();
        assert_eq!(json["not-an-ident"], "v");
        assert_eq!(json["n"], 3);
        assert_eq!(json["PXEMNGR_URL"], "http://p/");
    }

    #[test]
    fn failure_body_exits_1() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(failure("no profile for 'x'\n$(id)"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "edeploy: no profile for 'x' $(id)\n"
        );
    }
}

//! Compile bpf/xdp_er.c to a BPF object with clang. A missing clang or missing libbpf headers
//! must not break the workspace build: we then embed an empty object and `attach` reports how
//! to fix it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let src = "bpf/xdp_er.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=BPF_INCLUDE");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out_dir.join("xdp_er.o");
    if let Err(why) = compile(src, &obj) {
        println!(
            "cargo:warning=er-agent: BPF object not built ({why}); `er-agent attach` will fail. \
             Install clang and libbpf-dev and rebuild."
        );
        std::fs::write(&obj, []).expect("write empty BPF object");
    }
}

fn compile(src: &str, obj: &Path) -> Result<(), String> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let inc = std::env::var("BPF_INCLUDE").unwrap_or_else(|_| "/usr/include".to_string());
    if !Path::new(&inc).join("bpf/bpf_helpers.h").exists() {
        return Err(format!("{inc}/bpf/bpf_helpers.h not found (libbpf-dev)"));
    }
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    cmd.arg(format!("-I{inc}"));
    // Debian keeps asm/types.h in the multiarch directory, which -target bpf does not search.
    if let Some(triple) = multiarch() {
        let dir = Path::new("/usr/include").join(triple);
        if dir.exists() {
            cmd.arg(format!("-I{}", dir.display()));
        }
    }
    cmd.args(["-c", src, "-o"]).arg(obj);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{clang} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn multiarch() -> Option<&'static str> {
    // The build host's headers are what clang reads, and build scripts run on the host.
    match std::env::consts::ARCH {
        "x86_64" => Some("x86_64-linux-gnu"),
        "aarch64" => Some("aarch64-linux-gnu"),
        "riscv64" => Some("riscv64-linux-gnu"),
        "powerpc64" => Some("powerpc64le-linux-gnu"),
        "s390x" => Some("s390x-linux-gnu"),
        _ => None,
    }
}

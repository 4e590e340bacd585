//! What a Debian VM installs: the hardened systemd unit (checked by
//! `systemd-analyze verify` where the machine has it), the production
//! configuration the package puts in /etc/conduit, and the package's
//! metadata (`cargo deb`), whose files must exist.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_unit_is_hardened_and_systemd_accepts_it() {
    let unit = read("packaging/conduit.service");
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=conduit",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ExecStart=/usr/bin/conduit --config /etc/conduit/conduit.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|line| line == setting), "{setting} missing");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not on this machine: the unit's syntax is not verified here");
        return;
    };
    // Verified against the binary just built (the unit names its installed path).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("conduit.service");
    std::fs::write(&copy, unit.replace("/usr/bin/conduit", env!("CARGO_BIN_EXE_conduit"))).unwrap();
    let output = std::process::Command::new(analyze).args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file()).ok_or(())
}

#[test]
fn the_packaged_configuration_is_valid() {
    let config = conduit::config::Config::from_toml_with_env(&read("packaging/conduit.toml"), Vec::new())
        .expect("packaging/conduit.toml must load");
    assert_eq!(config.database_path, Path::new("/var/lib/conduit/db"), "in the unit's StateDirectory");
    assert_eq!(config.registration, conduit::config::RegistrationMode::Closed);
}

#[test]
fn the_package_metadata_names_files_that_exist() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    for asset in deb["assets"].as_array().unwrap() {
        let source = asset[0].as_str().unwrap();
        if source.starts_with("target/") {
            continue; // built by `cargo deb`
        }
        let found = match source.strip_suffix("*.md") {
            Some(dir) => std::fs::read_dir(Path::new(ROOT).join(dir)).map(|d| d.count() > 0).unwrap_or(false),
            None => Path::new(ROOT).join(source).is_file(),
        };
        assert!(found, "{source} is not in the repository");
    }
    assert_eq!(deb["systemd-units"]["unit-scripts"].as_str(), Some("packaging"));
    assert!(Path::new(ROOT).join("packaging/conduit.service").is_file());
}

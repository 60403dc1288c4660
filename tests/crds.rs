//! The files in crds/ are what `compute-server crd` prints: regenerate them with `make crds`.

#[test]
fn crds_folder_matches_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let crds = compute_server::crd::all();
    for crd in &crds {
        let path = dir.join(compute_server::crd::file_name(crd));
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        assert!(
            on_disk == compute_server::crd::to_yaml(crd).unwrap(),
            "{} is out of date with the Rust types in src/api; run `make crds` and commit the result",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, crds.len(), "crds/ holds files that no Rust type generates");
}

#[test]
fn crd_command_prints_every_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_compute-server"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    for name in [
        "computeservers",
        "computeprofiles",
        "computenodes",
        "computesnapshots",
        "computequotas",
        "computeusages",
    ] {
        assert!(
            yaml.contains(&format!("name: {name}.computeserver.io")),
            "{name} missing from `crd` output"
        );
    }
    assert_eq!(yaml.matches("kind: CustomResourceDefinition").count(), 6);
}

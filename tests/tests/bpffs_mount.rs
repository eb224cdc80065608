//! Two attaches that start together on a machine without bpffs on /sys/fs/bpf mount it once.
//!
//! Before the mount was taken under a lock, both saw no bpffs and both mounted one: the second
//! mount hid the first one's pin directory, whose next pin failed with ENOENT (the CI run of a
//! fresh machine failed so in `cli::big_import_…`; with the unlocked binary this test saw two
//! mounts and a failed pin in 3 of 5 tries).
//!
//! Each try runs in a mount and network namespace of its own (`unshare -m -n`), where bpffs is
//! unmounted and two veth ends are created: nothing outside the try sees its mounts, links or
//! pins, and both namespaces go when the try's shell exits.

use std::{process::Command, time::Duration};

use integration_tests::cli::bin;

const TRIES: usize = 5;

#[test]
fn concurrent_attaches_mount_bpffs_once() {
    let state = std::env::temp_dir().join(format!("sipr-mnt-{}-state", std::process::id()));
    for t in 0..TRIES {
        let script = format!(
            r#"
set -u
while grep -q ' /sys/fs/bpf .* - bpf ' /proc/self/mountinfo; do umount -l /sys/fs/bpf; done
ip link add sprmnt0 type veth peer name sprmnt1 && ip link set sprmnt0 up && ip link set sprmnt1 up
{bin} attach -i sprmnt0 >"$LOGS.0" 2>&1 & a=$!
{bin} attach -i sprmnt1 >"$LOGS.1" 2>&1 & b=$!
# Until both attached (or one of them gave up), at most 20 s.
for _ in $(seq 200); do
    n=$(cat "$LOGS.0" "$LOGS.1" | grep -c -e 'attached to' -e '^sip-rewriter:')
    [ "$n" -ge 2 ] && break
    sleep 0.1
done
echo "mounts=$(grep -c ' /sys/fs/bpf .* - bpf ' /proc/self/mountinfo)"
kill $a $b 2>/dev/null
wait $a $b 2>/dev/null
true
"#,
            bin = bin().display()
        );
        let logs = state.with_extension(format!("try{t}"));
        let out = Command::new("unshare")
            .args([
                "-m",
                "-n",
                "--propagation",
                "private",
                "bash",
                "-c",
                &script,
            ])
            .env("LOGS", &logs)
            .env("SIP_REWRITER_PIN_ROOT", "/sys/fs/bpf/sipr-mnt")
            .env("SIP_REWRITER_STATE_DIR", &state)
            .env("RUST_LOG", "info")
            .output()
            .expect("running unshare");
        let log = |k: u32| std::fs::read_to_string(logs.with_extension(format!("try{t}.{k}")));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (l0, l1) = (log(0).unwrap_or_default(), log(1).unwrap_or_default());
        for k in 0..2 {
            let _ = std::fs::remove_file(logs.with_extension(format!("try{t}.{k}")));
        }
        assert!(
            stdout.contains("mounts=1"),
            "try {t}: {stdout}{}\n{l0}\n{l1}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in [&l0, &l1] {
            assert!(l.contains("attached to sprmnt"), "try {t}: {l}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&state);
}

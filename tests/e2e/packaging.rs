//! The packaging checked against the project, without a container engine: the Dockerfile's
//! stages, copies, entry point, command and health check against the workspace's manifests
//! and the real `sandbox-host` command line; the `.dockerignore` against the build's inputs;
//! the systemd unit against the same program and the hub's stop timing.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cargo_metadata::semver::Version;
use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId, TargetKind};

/// Where the binary lives in the image and on a systemd host.
const INSTALLED_PROGRAM: &str = "/usr/local/bin/sandbox-host";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn metadata() -> Metadata {
    MetadataCommand::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .exec()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile, as the builder reads it: logical lines joined at a trailing `\`, comment
// lines dropped (also inside a continuation), the exec (JSON array) and shell forms, leading
// `--flag=value` options, and stages split at `FROM image [AS name]`. Heredocs and the
// `escape` parser directive are refused rather than misread.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Arguments {
    /// `["program", "arg"]`.
    Exec(Vec<String>),
    /// Anything else: the text as written, run by `/bin/sh -c` where it is a command.
    Shell(String),
}

impl Arguments {
    fn parse(text: &str) -> Arguments {
        let text = text.trim();
        if text.starts_with('[') {
            // Like the builder: a JSON array of strings, or else the shell form.
            if let Ok(words) = serde_json::from_str::<Vec<String>>(text) {
                return Arguments::Exec(words);
            }
        }
        Arguments::Shell(text.to_owned())
    }

    fn exec(&self) -> &[String] {
        match self {
            Arguments::Exec(words) => words,
            Arguments::Shell(text) => panic!("expected the exec form, found `{text}`"),
        }
    }

    fn words(&self) -> Vec<String> {
        match self {
            Arguments::Exec(words) => words.clone(),
            Arguments::Shell(text) => text.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Instruction {
    /// Upper case.
    keyword: String,
    /// Leading `--name=value` options (`--name` alone has an empty value).
    flags: Vec<(String, String)>,
    /// What follows the keyword and the flags.
    rest: String,
    /// The first physical line (1-based), for messages.
    line: usize,
}

impl Instruction {
    fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(flag, _)| flag == name)
            .map(|(_, value)| value.as_str())
    }

    fn arguments(&self) -> Arguments {
        Arguments::parse(&self.rest)
    }
}

#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a Instruction> + use<'a> {
        let keyword = keyword.to_owned();
        self.instructions
            .iter()
            .filter(move |instruction| instruction.keyword == keyword)
    }

    fn last(&self, keyword: &str) -> &Instruction {
        self.all(keyword)
            .last()
            .unwrap_or_else(|| panic!("stage {:?} has no {keyword}", self.name))
    }

    /// The `ENV` variables it sets, in order (a later one wins).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for instruction in self.all("ENV") {
            let rest = instruction.rest.trim();
            let first = rest.split_whitespace().next().unwrap_or_default();
            if first.contains('=') {
                for pair in rest.split_whitespace() {
                    let (key, value) = pair.split_once('=').unwrap();
                    env.insert(key.to_owned(), value.trim_matches('"').to_owned());
                }
            } else {
                let value = rest[first.len()..].trim().trim_matches('"');
                env.insert(first.to_owned(), value.to_owned());
            }
        }
        env
    }

    /// The `WORKDIR` in force at the end of the stage (`/` when none).
    fn workdir(&self) -> PathBuf {
        self.all("WORKDIR")
            .fold(PathBuf::from("/"), |dir, instruction| {
                dir.join(instruction.rest.trim())
            })
    }
}

/// The instructions that take leading `--flag` options.
const FLAGGED: &[&str] = &["FROM", "COPY", "ADD", "RUN", "HEALTHCHECK"];

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(directive) = trimmed.strip_prefix('#')
            && logical.is_empty()
            && pending.is_none()
            && directive
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("escape")
        {
            panic!("the `escape` parser directive is not supported here");
        }
        // Blank and comment lines are dropped, also inside a continuation (as the builder does).
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                logical.push((start, joined));
            }
        }
    }
    if let Some(unfinished) = pending {
        logical.push(unfinished);
    }

    let mut stages: Vec<Stage> = Vec::new();
    for (line, text) in logical {
        let text = text.trim();
        let (keyword, mut rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let keyword = keyword.to_ascii_uppercase();
        let mut flags = Vec::new();
        if FLAGGED.contains(&keyword.as_str()) {
            loop {
                rest = rest.trim_start();
                let Some(flag) = rest.strip_prefix("--") else {
                    break;
                };
                let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
                let (name, value) = flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
                flags.push((name.to_owned(), value.to_owned()));
                rest = &flag[end..];
            }
        }
        assert!(
            !rest.contains("<<"),
            "line {line}: heredocs are not supported here"
        );
        let instruction = Instruction {
            keyword,
            flags,
            rest: rest.trim().to_owned(),
            line,
        };
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_] => None,
                [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                    Some((*name).to_owned())
                }
                _ => panic!("line {line}: cannot read `FROM {}`", instruction.rest),
            };
            stages.push(Stage {
                base: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            let stage = stages
                .last_mut()
                .unwrap_or_else(|| panic!("line {line}: {} before FROM", instruction.keyword));
            stage.instructions.push(instruction);
        }
    }
    stages
}

fn dockerfile() -> Vec<Stage> {
    parse_dockerfile(&read("Dockerfile"))
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|stage| stage.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no stage named {name}"))
}

/// A `COPY`'s sources and destination (the shell form: words; the last is the destination).
fn copy_paths(instruction: &Instruction) -> (Vec<String>, String) {
    let mut words = instruction.arguments().words();
    let destination = words.pop().unwrap();
    (words, destination)
}

/// The one `cargo build` command of the builder stage's `RUN`s, as words.
fn cargo_build(builder: &Stage) -> (Vec<String>, &Instruction) {
    let mut found = Vec::new();
    for run in builder.all("RUN") {
        let text = run.arguments().words().join(" ");
        for command in text.split(['&', ';', '|']) {
            let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            if words.len() >= 2 && words[0] == "cargo" && words[1] == "build" {
                found.push((words, run));
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one `cargo build` in the builder: {found:?}"
    );
    found.pop().unwrap()
}

/// What `cargo build` ARGS builds: (package, profile directory, --locked).
fn cargo_build_options(words: &[String]) -> (String, String, bool) {
    let mut package = None;
    let mut profile = "debug".to_owned();
    let mut locked = false;
    let mut words = words.iter().skip(2);
    while let Some(word) = words.next() {
        match word.as_str() {
            "-p" | "--package" => package = words.next().cloned(),
            "--release" | "-r" => profile = "release".to_owned(),
            "--profile" => profile = words.next().unwrap().clone(),
            "--locked" | "--frozen" => locked = true,
            other => {
                if let Some(name) = other.strip_prefix("--package=") {
                    package = Some(name.to_owned());
                } else if let Some(name) = other.strip_prefix("--profile=") {
                    profile = name.to_owned();
                }
            }
        }
    }
    let profile = match profile.as_str() {
        "dev" | "test" => "debug".to_owned(),
        "bench" => "release".to_owned(),
        _ => profile,
    };
    (
        package.expect("`cargo build` names its package"),
        profile,
        locked,
    )
}

/// The program the image runs (after tini's `--`) and the CMD's arguments.
fn entrypoint_and_cmd(runtime: &Stage) -> (String, Vec<String>) {
    let entrypoint = runtime.last("ENTRYPOINT").arguments().exec().to_vec();
    let cmd = runtime.last("CMD").arguments().exec().to_vec();
    assert_eq!(entrypoint[0], "/usr/bin/tini", "tini is PID 1");
    assert_eq!(entrypoint.len(), 3, "tini -- PROGRAM: {entrypoint:?}");
    assert_eq!(entrypoint[1], "--");
    (entrypoint[2].clone(), cmd)
}

/// The value after `flag` in `words`.
fn flag_value<'a>(words: &'a [String], flag: &str) -> &'a str {
    let at = words
        .iter()
        .position(|word| word == flag)
        .unwrap_or_else(|| panic!("no {flag} in {words:?}"));
    words
        .get(at + 1)
        .unwrap_or_else(|| panic!("{flag} without a value"))
}

/// Runs the real `sandbox-host` with `arguments` and `--help` appended: clap refuses an
/// unknown subcommand or flag before it gets to `--help`, so exit 0 means all of them exist.
/// Returns the help text.
fn help_for(arguments: &[String]) -> String {
    let output = Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
        .args(arguments)
        .arg("--help")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "sandbox-host {} --help: {stdout}{}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    for flag in arguments.iter().filter(|word| word.starts_with("--")) {
        assert!(stdout.contains(flag.as_str()), "{flag} in:\n{stdout}");
    }
    stdout
}

/// `rust:1.88-bookworm` → (1.88.0, "bookworm"); `debian:bookworm-slim` → "bookworm".
fn rust_image_version(image: &str) -> (Version, String) {
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is the official Rust image: {image}"));
    let (version, release) = tag
        .split_once('-')
        .unwrap_or_else(|| panic!("the Rust image's tag names its Debian release: {image}"));
    let mut parts: Vec<u64> = version
        .split('.')
        .map(|part| part.parse().unwrap())
        .collect();
    parts.resize(3, 0);
    (
        Version::new(parts[0], parts[1], parts[2]),
        release.to_owned(),
    )
}

fn workspace_package<'a>(metadata: &'a Metadata, name: &str) -> &'a cargo_metadata::Package {
    metadata
        .workspace_packages()
        .into_iter()
        .find(|package| package.name.as_str() == name)
        .unwrap_or_else(|| panic!("no workspace package {name}"))
}

#[test]
fn the_runtime_stage_copies_what_the_builder_builds() {
    let stages = dockerfile();
    assert_eq!(stages.len(), 2, "builder and runtime");
    let builder = stage(&stages, "builder");
    let runtime = stages.last().unwrap();

    let (words, _) = cargo_build(builder);
    let (package, profile, locked) = cargo_build_options(&words);
    assert!(locked, "the build uses Cargo.lock as it is: {words:?}");
    assert_eq!(profile, "release");
    let metadata = metadata();
    let package = workspace_package(&metadata, &package);
    let binaries: Vec<&str> = package
        .targets
        .iter()
        .filter(|target| target.kind.contains(&TargetKind::Bin))
        .map(|target| target.name.as_str())
        .collect();
    assert_eq!(binaries, [sandbox_tests::SANDBOX_HOST.name]);
    assert_eq!(package.name.as_str(), sandbox_tests::SANDBOX_HOST.package);

    let target_dir = builder
        .env()
        .get("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| builder.workdir().join("target"));
    let built = target_dir.join(&profile).join(binaries[0]);

    let from_builder: Vec<&Instruction> = runtime
        .all("COPY")
        .chain(runtime.all("ADD"))
        .filter(|instruction| instruction.flag("from").is_some())
        .collect();
    assert_eq!(from_builder.len(), 1, "{from_builder:?}");
    for copy in from_builder {
        assert_eq!(
            copy.flag("from"),
            builder.name.as_deref(),
            "line {}",
            copy.line
        );
        let (sources, destination) = copy_paths(copy);
        assert_eq!(
            sources,
            [built.display().to_string()],
            "line {}: copies what the builder built",
            copy.line
        );
        assert_eq!(destination, INSTALLED_PROGRAM);
    }

    // Every other copy comes from the build context: it exists and is not ignored.
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    for copy in runtime
        .all("COPY")
        .filter(|copy| copy.flag("from").is_none())
    {
        let (sources, _) = copy_paths(copy);
        for source in sources {
            assert!(
                workspace_root().join(&source).is_file(),
                "line {}: {source} is not in the repository",
                copy.line
            );
            assert!(!ignore.ignores(&source), "{source} is in .dockerignore");
        }
    }
}

#[test]
fn the_builder_rust_is_new_enough_and_matches_the_runtime_debian() {
    let stages = dockerfile();
    let builder = stage(&stages, "builder");
    let runtime = stages.last().unwrap();
    let (rust, release) = rust_image_version(&builder.base);
    assert_eq!(
        runtime.base,
        format!("debian:{release}-slim"),
        "the runtime's Debian release is the builder's (the binary links its glibc)"
    );

    let metadata = metadata();
    let (words, _) = cargo_build(builder);
    let (package, _, _) = cargo_build_options(&words);
    let root = workspace_package(&metadata, &package);
    let workspace_version = root.rust_version.clone().expect("rust-version is set");
    assert!(
        rust >= workspace_version,
        "{} is older than the workspace's rust-version {workspace_version}",
        builder.base
    );

    // Every locked dependency the build compiles (normal and build dependencies) accepts it.
    let resolve = metadata.resolve.as_ref().unwrap();
    let nodes: BTreeMap<&PackageId, _> =
        resolve.nodes.iter().map(|node| (&node.id, node)).collect();
    let mut pending = vec![&root.id];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(id) = pending.pop() {
        if !seen.insert(id) {
            continue;
        }
        let package = &metadata[id];
        if let Some(required) = &package.rust_version {
            assert!(
                rust >= *required,
                "{} needs Rust {required}, the builder has {rust}",
                package.name
            );
        }
        for dependency in &nodes[id].deps {
            if dependency
                .dep_kinds
                .iter()
                .any(|kind| matches!(kind.kind, DependencyKind::Normal | DependencyKind::Build))
            {
                pending.push(&dependency.pkg);
            }
        }
    }
    assert!(seen.len() > 10, "the dependency walk found the graph");
}

#[test]
fn entrypoint_cmd_and_healthcheck_parse_with_the_real_cli() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let (program, cmd) = entrypoint_and_cmd(runtime);
    assert_eq!(program, INSTALLED_PROGRAM, "the program copied in");
    assert_eq!(cmd.first().map(String::as_str), Some("run"));
    assert!(help_for(&cmd).contains("--config"));
    assert!(
        runtime
            .all("RUN")
            .any(|run| run.rest.contains("install") && run.rest.contains("tini")),
        "tini is installed"
    );

    let healthcheck = runtime.last("HEALTHCHECK");
    assert!(
        healthcheck.flag("start-period").is_some(),
        "the hub gets time to open its control socket"
    );
    let command = healthcheck
        .rest
        .strip_prefix("CMD")
        .unwrap_or_else(|| panic!("HEALTHCHECK CMD …, found {}", healthcheck.rest));
    let command = Arguments::parse(command).exec().to_vec();
    assert_eq!(command[0], INSTALLED_PROGRAM);
    assert_eq!(command[1], "status");
    assert!(help_for(&command[1..]).contains("--config"));
    assert_eq!(
        flag_value(&command, "--config"),
        flag_value(&cmd, "--config"),
        "the health check asks the hub the image runs"
    );

    let stop_signal = runtime.last("STOPSIGNAL");
    assert_eq!(
        stop_signal.rest, "SIGTERM",
        "the signal the hub stops cleanly on"
    );
}

#[test]
fn the_image_runs_as_a_user_on_its_volume_and_exposes_the_http_port() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let user = runtime.last("USER").rest.clone();
    let name = user.split(':').next().unwrap();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "the image ends as a non-root user, not {user}"
    );
    assert!(
        runtime
            .all("RUN")
            .any(|run| run.rest.contains("useradd") && run.rest.contains(name)),
        "the image creates {name}"
    );

    let (_, cmd) = entrypoint_and_cmd(runtime);
    let config_dir = flag_value(&cmd, "--config");
    let volumes: Vec<String> = runtime
        .all("VOLUME")
        .flat_map(|volume| volume.arguments().words())
        .collect();
    assert!(
        volumes.iter().any(|volume| volume == config_dir),
        "VOLUME {config_dir}: {volumes:?}"
    );
    assert_eq!(
        runtime.env().get("SANDBOX_HOST_CONFIG").map(String::as_str),
        Some(config_dir),
        "a command run in the container finds the hub without --config"
    );
    assert!(
        runtime.all("RUN").any(|run| run.rest.contains("chown")
            && run.rest.contains(name)
            && run.rest.contains(config_dir)),
        "{name} owns {config_dir}"
    );

    let default_port = sandbox_host_cli::config::DEFAULT_HTTP_ADDRESS
        .parse::<SocketAddr>()
        .unwrap()
        .port();
    let exposed: Vec<String> = runtime
        .all("EXPOSE")
        .flat_map(|expose| expose.arguments().words())
        .collect();
    assert!(
        exposed
            .iter()
            .any(|port| port.split('/').next() == Some(&default_port.to_string())),
        "EXPOSE {default_port}: {exposed:?}"
    );
}

#[test]
fn the_image_configuration_is_accepted_and_listens_on_every_address() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let (_, cmd) = entrypoint_and_cmd(runtime);
    let config_dir = Path::new(flag_value(&cmd, "--config"));
    let into_config: Vec<(String, String)> = runtime
        .all("COPY")
        .filter(|copy| copy.flag("from").is_none())
        .map(copy_paths)
        .filter(|(_, destination)| Path::new(destination).parent() == Some(config_dir))
        .map(|(mut sources, destination)| (sources.remove(0), destination))
        .collect();
    let [(source, destination)] = into_config.as_slice() else {
        panic!("one configuration file copied into {config_dir:?}: {into_config:?}");
    };
    assert_eq!(
        Path::new(destination).file_name().unwrap(),
        sandbox_host_cli::config::CONFIG_FILE_NAME
    );
    assert!(
        copied_before_volume(runtime, destination),
        "the file is copied before VOLUME (so a new volume starts with it)"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        workspace_root().join(source),
        dir.path().join(sandbox_host_cli::config::CONFIG_FILE_NAME),
    )
    .unwrap();
    let output = Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let port = sandbox_host_cli::config::DEFAULT_HTTP_ADDRESS
        .parse::<SocketAddr>()
        .unwrap()
        .port();
    assert!(stdout.contains(&format!("http 0.0.0.0:{port}")), "{stdout}");
}

/// Whether the copy to `destination` comes before the stage's first `VOLUME`.
fn copied_before_volume(runtime: &Stage, destination: &str) -> bool {
    let instructions = &runtime.instructions;
    let copied = instructions.iter().position(|instruction| {
        instruction.keyword == "COPY" && copy_paths(instruction).1 == destination
    });
    let declared = instructions
        .iter()
        .position(|instruction| instruction.keyword == "VOLUME");
    matches!((copied, declared), (Some(copied), Some(declared)) if copied < declared)
}

// ---------------------------------------------------------------------------------------------
// The .dockerignore: patterns as the builder reads them (a leading `/` and a trailing `/`
// dropped, `*` and `?` within a path component, `**` across any number of components, `!` to
// take a path back), where a pattern that matches a folder matches everything in it and the
// last matching pattern decides.
// ---------------------------------------------------------------------------------------------

struct DockerIgnore {
    /// (taken back with `!`, the pattern's components).
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> DockerIgnore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (negated, pattern) = match line.strip_prefix('!') {
                    Some(pattern) => (true, pattern.trim()),
                    None => (false, line),
                };
                assert!(
                    !pattern.contains(['[', '\\']),
                    "character classes and escapes are not supported here: {pattern}"
                );
                let components = pattern
                    .trim_matches('/')
                    .split('/')
                    .filter(|component| !component.is_empty() && *component != ".")
                    .map(str::to_owned)
                    .collect();
                (negated, components)
            })
            .collect();
        DockerIgnore { rules }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the context.
    fn ignores(&self, path: &str) -> bool {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut ignored = false;
        for (negated, pattern) in &self.rules {
            let matched = (1..=components.len())
                .any(|length| match_components(pattern, &components[..length]));
            if matched {
                ignored = !negated;
            }
        }
        ignored
    }
}

fn match_components(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skipped| match_components(rest, &path[skipped..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((component, path_rest)) => {
                match_glob(first.as_bytes(), component.as_bytes())
                    && match_components(rest, path_rest)
            }
            None => false,
        },
    }
}

/// `*` (any run of characters) and `?` (one character) within one component.
fn match_glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skipped| match_glob(rest, &text[skipped..])),
        Some((b'?', rest)) => !text.is_empty() && match_glob(rest, &text[1..]),
        Some((byte, rest)) => text.first() == Some(byte) && match_glob(rest, &text[1..]),
    }
}

/// Every file under `dir` with one of `extensions`, skipping `target` folders.
fn files_with(dir: &Path, extensions: &[&str], found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "target") {
                files_with(&path, extensions, found);
            }
        } else if path
            .extension()
            .is_some_and(|extension| extensions.iter().any(|wanted| extension == *wanted))
        {
            found.push(path);
        }
    }
}

#[test]
fn dockerignore_keeps_build_output_out_and_every_build_input_in() {
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    for left_out in ["target", "target/release/sandbox-host", ".git", ".git/HEAD"] {
        assert!(ignore.ignores(left_out), "{left_out} is left out");
    }

    let root = workspace_root();
    let relative = |path: &Path| {
        path.strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
    };
    let metadata = metadata();
    let mut inputs = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    for package in metadata.workspace_packages() {
        let manifest = package.manifest_path.clone().into_std_path_buf();
        // Cargo reads every member's manifest and targets, even to build one package.
        inputs.extend(
            package
                .targets
                .iter()
                .map(|target| target.src_path.clone().into_std_path_buf()),
        );
        // And what the sources include or the build scripts compile.
        files_with(
            manifest.parent().unwrap(),
            &["rs", "toml", "json", "proto"],
            &mut inputs,
        );
        inputs.push(manifest);
    }
    assert!(inputs.len() > 50, "found the build's inputs: {inputs:?}");
    for input in inputs {
        let input = relative(&input);
        assert!(!ignore.ignores(&input), "{input} is a build input");
    }
}

#[test]
fn the_parsers_read_what_the_builder_reads() {
    let stages = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n\
         FROM rust:1.90-bookworm AS build\n\
         RUN --mount=type=cache,target=/x \\\n\
         # a comment inside the continuation\n\
         \n\
         \x20   cargo build \\\n\
         \x20   --release -p some-cli --locked\n\
         \n\
         from debian:bookworm-slim\n\
         ENV A=1 B=\"two\"\n\
         ENV C three\n\
         COPY --from=build --chmod=0755 /src/target/release/x /usr/bin/x\n\
         CMD [\"run\", \"--config\", \"/c\"]\n\
         ENTRYPOINT [not json]\n\
         HEALTHCHECK --interval=5s CMD [\"x\", \"status\"]\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].base, "rust:1.90-bookworm");
    assert_eq!(stages[0].name.as_deref(), Some("build"));
    assert_eq!(stages[1].name, None);
    let run = stages[0].last("RUN");
    assert_eq!(run.line, 3);
    assert_eq!(run.flag("mount"), Some("type=cache,target=/x"));
    let (words, _) = cargo_build(&stages[0]);
    assert_eq!(
        cargo_build_options(&words),
        ("some-cli".to_owned(), "release".to_owned(), true)
    );
    let env = stages[1].env();
    assert_eq!(env["A"], "1");
    assert_eq!(env["B"], "two");
    assert_eq!(env["C"], "three");
    let copy = stages[1].last("COPY");
    assert_eq!(copy.flag("from"), Some("build"));
    assert_eq!(
        copy_paths(copy),
        (
            vec!["/src/target/release/x".to_owned()],
            "/usr/bin/x".to_owned()
        )
    );
    assert_eq!(
        stages[1].last("CMD").arguments(),
        Arguments::Exec(vec!["run".into(), "--config".into(), "/c".into()])
    );
    assert_eq!(
        stages[1].last("ENTRYPOINT").arguments(),
        Arguments::Shell("[not json]".into())
    );
    let healthcheck = stages[1].last("HEALTHCHECK");
    assert_eq!(healthcheck.flag("interval"), Some("5s"));
    assert_eq!(healthcheck.rest, "CMD [\"x\", \"status\"]");
    assert_eq!(stages[0].workdir(), Path::new("/"));

    assert_eq!(
        rust_image_version("rust:1.88-bookworm"),
        (Version::new(1, 88, 0), "bookworm".to_owned())
    );
    assert_eq!(
        rust_image_version("rust:1.90.1-trixie"),
        (Version::new(1, 90, 1), "trixie".to_owned())
    );

    let ignore = DockerIgnore::parse("target/\n/docs\n**/*.swp\n*.md\n!README.md\n");
    assert!(ignore.ignores("target/debug/x"));
    assert!(
        !ignore.ignores("host/target"),
        "anchored at the context's root"
    );
    assert!(ignore.ignores("docs/OPERATING.md"));
    assert!(ignore.ignores("host/src/.lib.rs.swp"));
    assert!(ignore.ignores("CHANGES.md"));
    assert!(!ignore.ignores("README.md"), "taken back");
    assert!(
        !ignore.ignores("host/CHANGES.md"),
        "`*` stays in one component"
    );
    assert!(!ignore.ignores("host/src/lib.rs"));

    let unit = parse_unit(
        "# comment\n[Unit]\nDescription=x\n\n[Service]\n; comment\nExecStart=/bin/x run \\\n  --config /c\nCapabilityBoundingSet=\nKillSignal=SIGTERM\n",
    );
    assert_eq!(unit["Service"]["ExecStart"], ["/bin/x run  --config /c"]);
    assert_eq!(unit["Service"]["CapabilityBoundingSet"], [""]);
    assert_eq!(unit["Unit"]["Description"], ["x"]);
    assert_eq!(systemd_seconds("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(systemd_seconds("45").unwrap(), Duration::from_secs(45));
    assert_eq!(
        systemd_seconds("1min 30s").unwrap(),
        Duration::from_secs(90)
    );
}

// ---------------------------------------------------------------------------------------------
// The systemd unit: `[Section]`s of `Key=Value` lines, `#` and `;` comment lines, a trailing
// `\` continuing a value; a key may repeat (every value is kept, in order).
// ---------------------------------------------------------------------------------------------

type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    let mut pending: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_none()
            && (trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';'))
        {
            continue;
        }
        let (key, mut value) = match pending.take() {
            Some((key, value)) => (key, value + " " + trimmed),
            None => {
                if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                    section = name.to_owned();
                    continue;
                }
                let (key, value) = trimmed
                    .split_once('=')
                    .unwrap_or_else(|| panic!("not Key=Value: {line}"));
                (key.trim().to_owned(), value.trim().to_owned())
            }
        };
        if let Some(head) = value.strip_suffix('\\') {
            value = head.to_owned();
            pending = Some((key, value));
            continue;
        }
        assert!(!section.is_empty(), "{key} outside a section");
        unit.entry(section.clone())
            .or_default()
            .entry(key)
            .or_default()
            .push(value);
    }
    unit
}

fn unit() -> Unit {
    parse_unit(&read("packaging/sandbox-host.service"))
}

/// The one value of `section`'s `key`.
fn unit_value<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let values = unit
        .get(section)
        .and_then(|keys| keys.get(key))
        .unwrap_or_else(|| panic!("{key}= missing from [{section}]"));
    assert_eq!(values.len(), 1, "one {key}=: {values:?}");
    &values[0]
}

/// A systemd time span: a bare number is seconds; otherwise `30s`, `1min 30s`, ….
fn systemd_seconds(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    humantime::parse_duration(value.trim()).ok()
}

#[test]
fn the_systemd_unit_runs_the_installed_program_with_arguments_the_cli_takes() {
    let unit = unit();
    let exec_start = unit_value(&unit, "Service", "ExecStart");
    let words: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[0], INSTALLED_PROGRAM);
    let (image_program, _) = entrypoint_and_cmd(dockerfile().last().unwrap());
    assert_eq!(words[0], image_program, "the same place as in the image");
    assert_eq!(words[1], "run");
    assert!(help_for(&words[1..]).contains("--config"));
    let state_directory = unit_value(&unit, "Service", "StateDirectory");
    assert_eq!(
        flag_value(&words, "--config"),
        format!("/var/lib/{state_directory}"),
        "the hub keeps its state in the directory systemd makes for it"
    );
    assert!(
        matches!(unit_value(&unit, "Service", "Type"), "exec" | "simple"),
        "the hub does not fork"
    );
    assert_eq!(unit_value(&unit, "Service", "Restart"), "on-failure");
    let dynamic_user = unit.get("Service").and_then(|keys| keys.get("DynamicUser"));
    let user = unit.get("Service").and_then(|keys| keys.get("User"));
    assert!(
        dynamic_user.is_some_and(|values| values == &["yes"])
            || user.is_some_and(|values| values.iter().all(|user| user != "root" && user != "0")),
        "not run as root"
    );
}

#[test]
fn the_systemd_unit_waits_longer_than_the_hub_takes_to_stop() {
    let unit = unit();
    assert_eq!(unit_value(&unit, "Service", "KillSignal"), "SIGTERM");
    assert_eq!(
        unit_value(&unit, "Service", "KillMode"),
        "mixed",
        "SIGTERM to the hub alone: it stops its sandboxes itself"
    );
    let timeout = systemd_seconds(unit_value(&unit, "Service", "TimeoutStopSec")).unwrap();
    let hub_stops_within =
        sandbox_host::manager::DEFAULT_STOP_GRACE + sandbox_host_cli::hub::SHUTDOWN_MARGIN;
    assert!(
        timeout > hub_stops_within,
        "TimeoutStopSec {timeout:?} must exceed the default stop grace plus the hub's margin \
         ({hub_stops_within:?})"
    );
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = unit();
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "sandbox-host"),
        ("RuntimeDirectory", "sandbox-host"),
    ] {
        assert_eq!(unit_value(&unit, "Service", key), expected, "{key}=");
    }
}

/// `systemd-analyze verify` on the unit, where the machine has it. It checks that the program
/// exists, so it reads a copy whose `ExecStart` runs the binary just built (the path is
/// checked above); it exits 0 even for a key it ignores, so any complaint about the unit fails.
#[test]
fn systemd_analyze_accepts_the_unit_where_available() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        return;
    }
    let binary = sandbox_tests::binary(sandbox_tests::SANDBOX_HOST);
    let text = read("packaging/sandbox-host.service");
    let prefix = format!("ExecStart={INSTALLED_PROGRAM} ");
    assert_eq!(text.matches(&prefix).count(), 1);
    let text = text.replace(&prefix, &format!("ExecStart={} ", binary.display()));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sandbox-host.service");
    std::fs::write(&copy, text).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_the_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("sandbox-host"))
        .collect();
    assert!(
        output.status.success() && about_the_unit.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

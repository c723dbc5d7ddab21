//! Find or fetch the prebuilt MLX: headers, `libmlx` and (for the wheel) its bundled libraries.
//!
//! Order of sources: `MLX_DIR`; an MLX of the right flavor and version installed in the active
//! Python; the pinned PyPI wheel, downloaded with pip, checked against `vendor/pins.toml`, and
//! unpacked (keeping the wheel's layout) into a cache that survives `cargo clean` of one profile.

use crate::pins::Pins;
use crate::tools::{python, run, PIP_HINT};
use crate::{elf, wheel, BuildResult};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which build of MLX: it decides the wheel and the libraries beside `libmlx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `mlx-cpu`: Linux, CPU only.
    Cpu,
    /// `mlx-cuda-13`: Linux with NVIDIA GPUs (feature `cuda`).
    Cuda13,
    /// `mlx-metal`: macOS on Apple silicon.
    Metal,
}

impl Flavor {
    pub fn for_target() -> BuildResult<Flavor> {
        let os = crate::env("CARGO_CFG_TARGET_OS")?;
        let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
        match (os.as_str(), cuda) {
            ("macos", false) => Ok(Flavor::Metal),
            ("macos", true) => Err("feature `cuda` is for Linux; on macOS MLX uses Metal".into()),
            ("linux", false) => Ok(Flavor::Cpu),
            ("linux", true) => Ok(Flavor::Cuda13),
            (other, _) => Err(format!(
                "target OS `{other}` is not supported: MLX ships prebuilt for Linux and macOS"
            )),
        }
    }

    /// The PyPI distribution that carries this flavor.
    pub fn distribution(self) -> &'static str {
        match self {
            Flavor::Cpu => "mlx-cpu",
            Flavor::Cuda13 => "mlx-cuda-13",
            Flavor::Metal => "mlx-metal",
        }
    }

    /// File name of the MLX shared library.
    pub fn library_file(self) -> &'static str {
        match self {
            Flavor::Metal => "libmlx.dylib",
            _ => "libmlx.so",
        }
    }
}

/// Where the MLX in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `MLX_DIR`: the user's prefix, used as it is.
    UserDir,
    /// An installed Python distribution, used as it is.
    Python,
    /// Our own cache of the pinned wheel: ours to adjust.
    Cache,
}

/// A prebuilt MLX ready to compile and link against.
#[derive(Debug, Clone)]
pub struct Mlx {
    /// Install prefix holding `lib/`, `include/`, `share/cmake/MLX/`.
    pub prefix: PathBuf,
    pub version: String,
    pub flavor: Flavor,
    pub origin: Origin,
}

impl Mlx {
    pub fn lib_dir(&self) -> PathBuf {
        self.prefix.join("lib")
    }
    pub fn include_dir(&self) -> PathBuf {
        self.prefix.join("include")
    }
    pub fn library(&self) -> PathBuf {
        self.lib_dir().join(self.flavor.library_file())
    }
}

pub fn provision(pins: &Pins, flavor: Flavor, out_dir: &Path) -> BuildResult<Mlx> {
    let wanted = &pins.mlx.version;
    if let Some(dir) = std::env::var_os("MLX_DIR") {
        let prefix = PathBuf::from(dir);
        let mlx = at_prefix(&prefix, flavor, Origin::UserDir)
            .map_err(|e| format!("MLX_DIR={}: {e}", prefix.display()))?;
        if &mlx.version != wanted {
            return Err(format!(
                "MLX_DIR={} holds MLX {}, but mlx-c {} needs exactly MLX {wanted} \
                 (the C++ ABI changes between patch releases)",
                prefix.display(),
                mlx.version,
                pins.mlx_c.version
            ));
        }
        return Ok(mlx);
    }
    if let Some(mlx) = from_python(flavor, wanted) {
        return Ok(mlx);
    }
    fetch_wheel(pins, flavor, out_dir)
}

/// Describes the MLX at `prefix`, checking its layout and reading its version.
fn at_prefix(prefix: &Path, flavor: Flavor, origin: Origin) -> BuildResult<Mlx> {
    let lib = prefix.join("lib").join(flavor.library_file());
    if !lib.is_file() {
        return Err(format!(
            "no {} in {}",
            flavor.library_file(),
            prefix.join("lib").display()
        ));
    }
    if !prefix.join("include/mlx/mlx.h").is_file() {
        return Err(format!("no include/mlx/mlx.h under {}", prefix.display()));
    }
    let version_file = prefix.join("share/cmake/MLX/MLXConfigVersion.cmake");
    let text = std::fs::read_to_string(&version_file)
        .map_err(|e| format!("cannot read {}: {e}", version_file.display()))?;
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("set(PACKAGE_VERSION \""))
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| format!("no PACKAGE_VERSION in {}", version_file.display()))?
        .to_string();
    Ok(Mlx {
        prefix: prefix.to_path_buf(),
        version,
        flavor,
        origin,
    })
}

/// An MLX of the right flavor and version installed in the active Python, if any.
fn from_python(flavor: Flavor, wanted: &str) -> Option<Mlx> {
    let script = format!(
        "import importlib.metadata as m, importlib.util as u, os\n\
         try:\n    v = m.version('{dist}')\nexcept Exception:\n    raise SystemExit(0)\n\
         s = u.find_spec('mlx')\n\
         for p in (list(s.submodule_search_locations) if s else []):\n\
         \x20   if os.path.isfile(os.path.join(p, 'lib', '{lib}')):\n\
         \x20       print(v); print(p); break\n",
        dist = flavor.distribution(),
        lib = flavor.library_file()
    );
    let output = Command::new(python()).arg("-c").arg(script).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut lines = text.lines();
    let (version, prefix) = (lines.next()?, lines.next()?);
    if version != wanted {
        println!(
            "cargo:warning=ignoring {} {version} installed in {}: mlx-c needs {wanted}",
            flavor.distribution(),
            python()
        );
        return None;
    }
    at_prefix(Path::new(prefix), flavor, Origin::Python).ok()
}

fn fetch_wheel(pins: &Pins, flavor: Flavor, out_dir: &Path) -> BuildResult<Mlx> {
    let dist = flavor.distribution();
    let version = &pins.mlx.version;
    let accepted = pins
        .mlx
        .wheels
        .get(dist)
        .ok_or_else(|| format!("vendor/pins.toml pins no wheel for {dist}"))?;
    let hint = format!("Set MLX_DIR to a prebuilt MLX {version} prefix, or build once online.");
    let dest = wheel::fetch_cached(
        out_dir,
        dist,
        version,
        &accepted.files,
        &hint,
        |whl, dir| unpack(flavor, version, whl, dir),
    )?;
    at_prefix(&dest.join("mlx"), flavor, Origin::Cache)
}

/// Unpacks the MLX wheel into `unpacked` (keeping its layout: `unpacked/mlx/lib/...`), checks
/// its version and makes `libmlx` locatable by absolute path.
fn unpack(flavor: Flavor, version: &str, whl: &Path, unpacked: &Path) -> BuildResult<()> {
    if flavor == Flavor::Cuda13 {
        // libmlx finds the CUDA libraries through RPATH entries such as
        // $ORIGIN/../../nvidia/cublas/lib: pip installs those wheels beside it.
        run(
            Command::new(python())
                .args(["-m", "pip", "install", "--no-compile"])
                .args(["--disable-pip-version-check", "--quiet", "--target"])
                .arg(unpacked)
                .arg(whl),
            "installing the CUDA wheel and its NVIDIA libraries",
            PIP_HINT,
        )?;
    } else {
        wheel::unzip(whl, unpacked)?;
    }
    let mlx = at_prefix(&unpacked.join("mlx"), flavor, Origin::Cache)?;
    if mlx.version != version {
        return Err(format!(
            "the {} wheel holds MLX {}, expected {version}",
            flavor.distribution(),
            mlx.version
        ));
    }
    elf::make_self_locating(&mlx.library())
}

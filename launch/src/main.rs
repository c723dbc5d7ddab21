//! `mlx-launch`: see the library's [`mlx_launch::cli`].

fn main() {
    // `cli::main` returns only after the ranks are done and its temporary files removed.
    std::process::exit(mlx_launch::cli::main());
}

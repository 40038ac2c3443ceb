fn main() {
    std::process::exit(licagent::cli::run(std::env::args_os().collect()));
}

fn main() {
    licagent::cli::pipe::install();
    std::process::exit(licagent::cli::run(std::env::args_os().collect()));
}

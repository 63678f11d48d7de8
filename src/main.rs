fn main() {
    std::process::exit(mailcow_borg::cli::run());
}

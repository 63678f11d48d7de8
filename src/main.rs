fn main() {
    // Passphrases, SSH keys and repository keys live in this process's memory: it must never be
    // written to a core file, nor be readable through ptrace or /proc/<pid>/mem by other
    // processes of the same user. Not dumpable gives both (and /proc/<pid>/ becomes root's).
    // SAFETY: PR_SET_DUMPABLE takes plain integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after
    // which the chunk-sized buffers of a restore all come from the heap arenas and stay there,
    // fragmented: peak memory then grows with the size of the archive. A fixed threshold keeps
    // large buffers in their own mappings, returned on free. Measured on a 20,000-mail restore
    // (scripts/bench-extract.sh): 1 MiB halves the peak memory at the same CPU time; 128 KiB
    // saves a little more memory but costs 45% more CPU in mmap/munmap and page faults.
    // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    std::process::exit(mailcow_borg::cli::run());
}

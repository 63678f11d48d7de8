//! The helper image, made from **our own running executable**: a FROM-scratch image that holds
//! only the static binary, imported through the API (`docker import`), so no registry and no
//! Dockerfile are ever needed on the mailcow host.
//!
//! The tag is `mailcow-borg:<version>-<first 12 hex digits of the executable's SHA-256>`: an
//! image made by this very binary is reused, and a different build (even of the same version)
//! gets its own; helper images of other builds are removed once the new one exists (one that a
//! container still uses stays). Importing needs the executable to be static — a dynamically linked build
//! cannot run in an empty image — which is checked first, with a message that says so.

use std::collections::HashMap;

use bollard::query_parameters::{CreateImageOptions, ListImagesOptionsBuilder, RemoveImageOptions};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::engine::{DockerError, Engine, is_not_found};

/// Where the binary lives in the image, and its entry point.
pub const HELPER_BINARY: &str = "/mailcow-borg";
/// The repository part of our images' tags.
pub const HELPER_REPOSITORY: &str = "mailcow-borg";
/// The label that marks images we made.
const IMAGE_LABEL: &str = "org.mailcow-borg.helper-image=1";

/// The helper image for `executable` (its bytes), and whether it had to be made now.
pub async fn ensure_helper_image(
    engine: &Engine,
    executable: &[u8],
    version: &str,
) -> Result<(String, bool), DockerError> {
    let digest = Sha256::digest(executable);
    let tag = format!("{version}-{}", crate::format::key::hex(&digest[..6]));
    let reference = format!("{HELPER_REPOSITORY}:{tag}");
    match engine.api.inspect_image(&reference).await {
        Ok(_) => return Ok((reference, false)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(DockerError::api(format!("inspecting image {reference}"), e)),
    }
    if elf_interpreter(executable) {
        return Err(DockerError::Api {
            context: format!("making the helper image {reference}"),
            detail: "this mailcow-borg executable is dynamically linked and cannot run in an empty image; use the static release build (see the README), or give --helper-image".into(),
        });
    }
    let rootfs = tar_with_one_file(&HELPER_BINARY[1..], executable, 0o755);
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(HELPER_REPOSITORY.into()),
        tag: Some(tag),
        changes: vec![
            format!("ENTRYPOINT [\"{HELPER_BINARY}\"]"),
            format!("LABEL {IMAGE_LABEL}"),
        ],
        ..Default::default()
    };
    let mut progress =
        engine
            .api
            .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| DockerError::api(format!("importing the helper image {reference}"), e))?;
    }
    remove_other_helper_images(engine, &reference).await;
    Ok((reference, true))
}

/// Removes the helper images of other builds, as far as the engine lets us (an image in use
/// stays); housekeeping, so its failures are not errors.
async fn remove_other_helper_images(engine: &Engine, keep: &str) {
    let filters = HashMap::from([("label", vec![IMAGE_LABEL])]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let Ok(images) = engine.api.list_images(Some(options)).await else {
        return;
    };
    for image in images {
        if image.repo_tags.iter().any(|t| t == keep) {
            continue;
        }
        for tag in &image.repo_tags {
            let _ = engine
                .api
                .remove_image(tag, None::<RemoveImageOptions>, None)
                .await;
        }
    }
}

/// Whether an ELF executable asks for a program interpreter (the dynamic loader).
fn elf_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // 64-bit little-endian ELF only: that is what we build.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at) == Some(PT_INTERP)
    })
}

/// A tar stream (ustar) holding one regular file owned by root.
fn tar_with_one_file(path: &str, content: &[u8], mode: u32) -> Vec<u8> {
    let mut header = [0u8; 512];
    let mut put = |at: usize, field: &[u8]| header[at..at + field.len()].copy_from_slice(field);
    put(0, path.as_bytes());
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", content.len()).as_bytes());
    put(136, b"00000000000\0");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    // The checksum is computed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let padding = (512 - content.len() % 512) % 512;
    let mut tar = Vec::with_capacity(512 + content.len() + padding + 1024);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(content);
    tar.resize(tar.len() + padding + 1024, 0);
    tar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_holds_the_file_where_tar_finds_it() {
        let content = b"#!/bin/sh\necho hello\n";
        let tar = tar_with_one_file("dir/tool", content, 0o755);
        assert_eq!(tar.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("t.tar");
        std::fs::write(&archive, &tar).unwrap();
        let listed = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listed.status.success(), "{listed:?}");
        let text = String::from_utf8(listed.stdout).unwrap();
        assert!(text.starts_with("-rwxr-xr-x 0/0"), "{text}");
        assert!(text.trim_end().ends_with("dir/tool"), "{text}");
        let out = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(out.success());
        assert_eq!(std::fs::read(dir.path().join("dir/tool")).unwrap(), content);
    }

    #[test]
    fn a_dynamically_linked_executable_is_recognised() {
        // The test binary itself is static (crt-static), /bin/sh is not.
        let ours = std::fs::read("/proc/self/exe").unwrap();
        assert!(!elf_interpreter(&ours));
        let shell = std::fs::read("/bin/sh").unwrap();
        assert!(elf_interpreter(&shell));
        assert!(!elf_interpreter(b"not an executable"));
    }
}

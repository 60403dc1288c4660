//! Copying a server to the object store and back, through Docker's archive API: [`take`] streams
//! its data volume and the paths of its root file system that changed (as [`diff`] selects them)
//! into two zstd-compressed tars and a manifest; [`restore`] streams them into a new container
//! that has not started yet, checking each object's SHA-256. Nothing is staged on the host's
//! disk, and memory stays bounded by the upload's part size.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::ZstdDecoder;
use async_compression::tokio::write::ZstdEncoder;
use bollard::Docker;
use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tar as tar;
use tokio_util::io::{ReaderStream, StreamReader};

use super::diff;
use crate::api::{Manifest, Part};
use crate::storage::Store;

/// Bytes of one part of a multipart upload; at most two are in flight, so an upload holds
/// about three parts' worth of memory whatever the snapshot's size.
const PART_BYTES: usize = 8 * 1024 * 1024;
const UPLOADS_IN_FLIGHT: usize = 2;
/// The chunks a restore streams into Docker: large, so few frames and wake-ups per MiB.
const STREAM_BYTES: usize = 1024 * 1024;
/// How many of those chunks a restore reads ahead of Docker.
const CHUNKS_AHEAD: usize = 4;

/// What can go wrong while copying a server to or from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Docker: {0}")]
    Docker(#[source] bollard::errors::Error),
    #[error("the object store {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The snapshot's objects are not what was stored: restoring it is refused.
    #[error("{0}")]
    Corrupt(String),
}

/// Bytes copied so far (uncompressed), for progress messages.
#[derive(Debug, Default)]
pub struct Progress(AtomicU64);

impl Progress {
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Object names of a snapshot's parts and manifest, under its location.
const MANIFEST: &str = "manifest.json";

/// Copies `container`'s data (at `manifest.data_path`) and its changed system paths to the store
/// under `location`; returns the manifest written, and its bytes (whose checksum is the
/// snapshot's).
pub async fn take(
    docker: &Docker,
    store: &Store,
    container: &str,
    mut manifest: Manifest,
    location: &str,
    progress: &Arc<Progress>,
) -> Result<(Manifest, Vec<u8>), Error> {
    let changes = docker
        .container_changes(container)
        .await
        .map_err(Error::Docker)?
        .unwrap_or_default();
    let changes: Vec<(String, diff::Change)> = changes.into_iter().map(|c| (c.path, c.kind.into())).collect();
    let selection = diff::select(&changes, &[manifest.data_path.as_str()]);
    let data = [manifest.data_path.clone()];
    let data_path = manifest.data_path.clone();
    // The data part holds all of the volume; the system part none of it, nor what is never copied.
    let parts = [
        ("data", &data[..], &[][..]),
        ("system", &selection.copy[..], &[data_path.as_str()][..]),
    ];
    manifest.parts.clear();
    for (name, paths, skip) in parts {
        let object = format!("{name}.tar.zst");
        let path = store.path(&format!("{location}/{object}"));
        let (size, stored, sha256) = put_tar(docker, store, container, paths, skip, path, progress).await?;
        manifest.parts.push(Part {
            name: name.into(),
            object,
            size,
            stored,
            sha256,
        });
    }
    manifest.removed = selection.removed;
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    let path = store.path(&format!("{location}/{MANIFEST}"));
    store
        .objects
        .put(&path, bytes.clone().into())
        .await
        .map_err(|source| store_error(store, source))?;
    Ok((manifest, bytes))
}

fn store_error(store: &Store, source: object_store::Error) -> Error {
    Error::Store {
        url: store.url.clone(),
        source,
    }
}

/// Streams the tar of `paths` (each rooted at `/`) of the container, compressed, into one object:
/// (tar bytes, stored bytes, SHA-256 of the stored bytes).
async fn put_tar(
    docker: &Docker,
    store: &Store,
    container: &str,
    paths: &[String],
    skip: &[&str],
    object: object_store::path::Path,
    progress: &Arc<Progress>,
) -> Result<(u64, u64, String), Error> {
    let upload = BufWriter::with_capacity(store.objects.clone(), object, PART_BYTES)
        .with_max_concurrency(UPLOADS_IN_FLIGHT);
    let stored = Tally::new(upload, true, None);
    let compressed = ZstdEncoder::with_quality(stored, Level::Fastest);
    let mut builder = tar::Builder::new(Tally::new(compressed, false, Some(progress.clone())));
    for copied in paths {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(copied)
            .build();
        let mut stream = docker
            .download_from_container(container, Some(options))
            .boxed()
            .peekable();
        // A path gone since Docker listed it (a log rotated, a file removed) has nothing to copy.
        if let Some(Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })) =
            Pin::new(&mut stream).peek().await
        {
            continue;
        }
        let reader = StreamReader::new(stream.map_err(std::io::Error::other));
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries()?;
        while let Some(entry) = entries.next().await {
            let mut entry = entry?;
            let Some(path) = diff::rooted(copied, &entry.path()?) else {
                continue;
            };
            if !skip.is_empty() && diff::skipped(&format!("/{}", path.display()), skip) {
                continue;
            }
            let mut header = entry.header().clone();
            if header.entry_type() == tar::EntryType::Link
                && let Some(target) = entry.link_name()?.and_then(|t| diff::rooted(copied, t.as_ref()))
            {
                header.set_link_name(target)?;
            }
            builder.append_data(&mut header, path, &mut entry).await?;
        }
    }
    let mut tar = builder.into_inner().await?;
    tar.shutdown().await?;
    let stored = tar.inner.get_ref();
    Ok((tar.count, stored.count, stored.digest()))
}

/// Restores the snapshot at `location` into `container` (made, not started): checks the
/// manifest against `checksum`, then streams each part into the container's root, checking its
/// SHA-256. Returns the manifest. On [`Error::Corrupt`] what was written must be thrown away.
pub async fn restore(
    docker: &Docker,
    store: &Store,
    container: &str,
    location: &str,
    checksum: &str,
    total: &AtomicU64,
    progress: &Progress,
) -> Result<Manifest, Error> {
    let path = store.path(&format!("{location}/{MANIFEST}"));
    let bytes = get(store, &path)
        .await?
        .bytes()
        .await
        .map_err(|e| store_error(store, e))?;
    let found = crate::api::checksum(&bytes);
    if found != checksum {
        return Err(Error::Corrupt(format!(
            "its manifest's checksum is {found}, not {checksum} as when it was taken"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("its manifest cannot be read: {e}")))?;
    total.store(manifest.size(), Ordering::Relaxed);
    for part in &manifest.parts {
        put_part(docker, store, container, location, part, progress).await?;
    }
    Ok(manifest)
}

async fn get(store: &Store, path: &object_store::path::Path) -> Result<object_store::GetResult, Error> {
    store.objects.get(path).await.map_err(|source| match source {
        object_store::Error::NotFound { .. } => {
            Error::Corrupt(format!("its object {path} is missing from the store"))
        }
        source => store_error(store, source),
    })
}

/// Streams one part from the store into the container, decompressing it and checking its hash.
async fn put_part(
    docker: &Docker,
    store: &Store,
    container: &str,
    location: &str,
    part: &Part,
    progress: &Progress,
) -> Result<(), Error> {
    let path = store.path(&format!("{location}/{}", part.object));
    let object = get(store, &path).await?;
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let store_failed: Arc<Mutex<Option<object_store::Error>>> = Arc::default();
    let body_failed: Arc<Mutex<Option<String>>> = Arc::default();
    let compressed = {
        let hasher = hasher.clone();
        let store_failed = store_failed.clone();
        object
            .into_stream()
            .inspect_ok(move |chunk| hasher.lock().expect("hash lock").update(chunk))
            .map_err(move |error| {
                let text = error.to_string();
                *store_failed.lock().expect("error lock") = Some(error);
                std::io::Error::other(text)
            })
    };
    let decoder = ZstdDecoder::new(StreamReader::new(compressed));
    let counted = {
        let body_failed = body_failed.clone();
        ReaderStream::with_capacity(decoder, STREAM_BYTES)
            .inspect_err(move |error| *body_failed.lock().expect("error lock") = Some(error.to_string()))
    };
    // The body must be 'static: progress is read through a channel of counts instead.
    let (sizes, mut seen) = futures::channel::mpsc::unbounded::<usize>();
    let counted = counted.inspect_ok(move |chunk| {
        let _ = sizes.unbounded_send(chunk.len());
    });
    // Reading the store (and hashing and decompressing) runs beside Docker's writing, a few
    // chunks ahead, instead of taking turns with it.
    let (chunks, ahead) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let _reading = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        tokio::pin!(counted);
        while let Some(chunk) = counted.next().await {
            if chunks.send(chunk).await.is_err() {
                break;
            }
        }
    }));
    let body = futures::stream::unfold(ahead, |mut ahead| async move {
        ahead.recv().await.map(|chunk| (chunk, ahead))
    });
    let options = UploadToContainerOptionsBuilder::default().path("/").build();
    let upload = docker.upload_to_container(container, Some(options), bollard::body_try_stream(body));
    tokio::pin!(upload);
    let result = loop {
        tokio::select! {
            result = &mut upload => break result,
            Some(n) = seen.next() => progress.add(n),
        }
    };
    while let Ok(n) = seen.try_recv() {
        progress.add(n);
    }
    if let Some(source) = store_failed.lock().expect("error lock").take() {
        return Err(store_error(store, source));
    }
    if let Some(error) = body_failed.lock().expect("error lock").take() {
        return Err(Error::Corrupt(format!(
            "its {} part ({}) does not decompress: {error}",
            part.name, part.object
        )));
    }
    result.map_err(Error::Docker)?;
    let found = crate::api::hex(&hasher.lock().expect("hash lock").clone().finalize());
    if found != part.sha256 {
        return Err(Error::Corrupt(format!(
            "its {} part ({}) has SHA-256 {found}, not {} as when it was taken",
            part.name, part.object, part.sha256
        )));
    }
    Ok(())
}

/// Removes every object of the snapshot at `location`; what is already gone is fine.
pub async fn remove(store: &Store, location: &str) -> Result<(), Error> {
    let prefix = store.path(location);
    let listed: Vec<_> = store
        .objects
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| store_error(store, e))?;
    for path in listed {
        match store.objects.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(store_error(store, source)),
        }
    }
    Ok(())
}

/// A writer that counts (and, if asked, hashes) what passes through it, and adds the count to
/// a progress.
struct Tally<W> {
    inner: W,
    count: u64,
    hasher: Option<Sha256>,
    progress: Option<Arc<Progress>>,
}

impl<W> Tally<W> {
    fn new(inner: W, hash: bool, progress: Option<Arc<Progress>>) -> Self {
        Tally {
            inner,
            count: 0,
            hasher: hash.then(Sha256::new),
            progress,
        }
    }

    fn digest(&self) -> String {
        crate::api::hex(&self.hasher.clone().unwrap_or_default().finalize())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Tally<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.count += n as u64;
            if let Some(hasher) = &mut this.hasher {
                hasher.update(&buf[..n]);
            }
            if let Some(progress) = &this.progress {
                progress.add(n);
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

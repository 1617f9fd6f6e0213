//! Writing PNGs: a temporary file beside the destination, renamed only once complete.

use super::*;

/// A temporary file next to the destination, removed unless renamed onto it.
pub(super) struct TempFile {
    pub(super) tmp: PathBuf,
    pub(super) out: PathBuf,
    pub(super) file: Option<File>,
}

impl TempFile {
    pub(super) fn create(out: &Path) -> Result<TempFile> {
        let cannot = |why: String| Error::Other(format!("cannot write {}: {why}", out.display()));
        let name = out
            .file_name()
            .ok_or_else(|| cannot("not a file name".into()))?;
        if out.is_dir() {
            return Err(cannot("it is a folder".into()));
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(cannot(format!("folder {} does not exist", dir.display())));
        }
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| cannot(e.to_string()))?;
        Ok(TempFile {
            tmp,
            out: out.to_path_buf(),
            file: Some(file),
        })
    }

    pub(super) fn finish(
        mut self,
        write: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        let cannot =
            |e: std::io::Error| Error::Other(format!("cannot write {}: {e}", self.out.display()));
        let mut f = self.file.take().expect("file present until finish");
        write(&mut f).map_err(cannot)?;
        f.sync_all().map_err(cannot)?;
        drop(f);
        fs::rename(&self.tmp, &self.out).map_err(cannot)?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

pub(super) fn encode_png(f: &mut File, r: &Rendered) -> std::io::Result<()> {
    let mut w = BufWriter::new(f);
    {
        let mut enc = png::Encoder::new(&mut w, r.width, r.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        let mut wr = enc.write_header().map_err(std::io::Error::other)?;
        wr.write_image_data(&r.rgb).map_err(std::io::Error::other)?;
        wr.finish().map_err(std::io::Error::other)?;
    }
    w.flush()
}

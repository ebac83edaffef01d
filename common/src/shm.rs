//! Shared memory: an anonymous mapping for a parent and the children it
//! forks, and named segments for processes that find each other by name.

use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::ptr::NonNull;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::unistd::{getpid, Pid};

/// One `T` in an anonymous `MAP_SHARED` mapping: after `fork`, parent and
/// children see the very same memory (not a copy-on-write copy).
///
/// The mapping starts zeroed and is unmapped when the handle is dropped.
/// `T`'s destructor runs only in the process that created the mapping: a
/// forked child leaves with `_exit` and never drops it, and if it did, it
/// would not destroy what the parent still uses.
///
/// `T` must not hold pointers into process-private memory (a `Vec`, a
/// `String`, a `Box`): another process would follow them into its own heap.
/// Use fixed-size data, atomics, and the locks of this crate. Since several
/// processes reach it through `&T`, changes go through atomics or locks.
pub struct Shared<T> {
    ptr: NonNull<T>,
    len: usize,
    creator: Pid,
    _owns: PhantomData<T>,
}

// SAFETY: the mapping is reached only through `&T`, so sharing the handle is
// as safe as sharing `&T`, which `T: Sync` allows.
unsafe impl<T: Sync> Sync for Shared<T> {}
// SAFETY: as above; the handle owns the mapping like a `Box<T>` would.
unsafe impl<T: Send + Sync> Send for Shared<T> {}

fn map_zeroed(len: usize) -> io::Result<NonNull<u8>> {
    let len = NonZeroUsize::new(len.max(1)).expect("len.max(1) is not zero");
    // SAFETY: a fresh anonymous mapping aliases nothing; the kernel zeroes it.
    let ptr = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .map_err(|e| io::Error::other(format!("mmap: {e}")))?;
    Ok(ptr.cast())
}

impl<T: Sync> Shared<T> {
    /// Map shared memory and move `value` into it.
    pub fn new(value: T) -> io::Result<Self> {
        // SAFETY: `init` writes a whole `T` before anyone reads it.
        unsafe {
            Self::new_in_place(|p| {
                p.write(value);
                Ok(())
            })
        }
    }

    /// Map zeroed shared memory and let `init` build the `T` in place, at
    /// its final address. Needed for objects that must not move once
    /// initialised, such as `sem_t` and `pthread_mutex_t`.
    ///
    /// # Safety
    /// When `init` returns `Ok`, the memory must hold a valid `T`.
    pub unsafe fn new_in_place(init: impl FnOnce(*mut T) -> io::Result<()>) -> io::Result<Self> {
        assert!(
            align_of::<T>() <= 4096,
            "page alignment is the most a mapping gives"
        );
        let len = size_of::<T>();
        let ptr = map_zeroed(len)?.cast::<T>();
        if let Err(e) = init(ptr.as_ptr()) {
            // SAFETY: we mapped exactly `len` bytes at `ptr` just above.
            let _ = unsafe { munmap(ptr.cast(), len.max(1)) };
            return Err(e);
        }
        Ok(Shared {
            ptr,
            len,
            creator: getpid(),
            _owns: PhantomData,
        })
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping holds an initialised `T` for as long as `self` lives.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if getpid() == self.creator {
            // SAFETY: the value was initialised at creation and is dropped once,
            // by the creator only.
            unsafe { self.ptr.as_ptr().drop_in_place() };
        }
        // SAFETY: we own this mapping of `len` bytes; nothing uses it after drop.
        let _ = unsafe { munmap(self.ptr.cast(), self.len.max(1)) };
    }
}

/// `len` values in one anonymous shared mapping, for arrays whose length is
/// chosen at run time. The same rules as [`Shared`] apply.
pub struct SharedSlice<T> {
    ptr: NonNull<T>,
    len: usize,
    creator: Pid,
    _owns: PhantomData<T>,
}

// SAFETY: as for `Shared`: reached only through `&[T]`.
unsafe impl<T: Sync> Sync for SharedSlice<T> {}
// SAFETY: as for `Shared`.
unsafe impl<T: Send + Sync> Send for SharedSlice<T> {}

impl<T: Sync> SharedSlice<T> {
    /// Map `len` values, the i-th being `fill(i)`.
    pub fn new(len: usize, fill: impl Fn(usize) -> T) -> io::Result<Self> {
        let bytes = size_of::<T>()
            .checked_mul(len)
            .ok_or_else(|| io::Error::other("shared slice too large"))?;
        let ptr = map_zeroed(bytes)?.cast::<T>();
        for i in 0..len {
            // SAFETY: `i < len`, inside the mapping, which is aligned to a page.
            unsafe { ptr.as_ptr().add(i).write(fill(i)) };
        }
        Ok(SharedSlice {
            ptr,
            len,
            creator: getpid(),
            _owns: PhantomData,
        })
    }
}

impl<T> Deref for SharedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised values live at `ptr` while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for SharedSlice<T> {
    fn drop(&mut self) {
        if getpid() == self.creator {
            // SAFETY: initialised at creation, dropped once by the creator.
            unsafe {
                std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len).drop_in_place()
            };
        }
        let bytes = (size_of::<T>() * self.len).max(1);
        // SAFETY: we own this mapping; nothing uses it after drop.
        let _ = unsafe { munmap(self.ptr.cast(), bytes) };
    }
}

/// One `T` in a named POSIX shared memory segment (`/dev/shm/<name>`),
/// through the `shared_memory` crate, which creates it with `O_EXCL` and
/// mode 0600.
///
/// The crate marks the creating handle as the owner and unlinks the name when
/// the owner is dropped. A forked child inherits a copy marked as owner too:
/// if it dropped that copy, it would unlink the name under everyone. Our
/// children leave with `_exit` and drop nothing, and [`NamedShared::unlink`]
/// gives up ownership before removing the name itself, once.
pub struct NamedShared<T> {
    shmem: shared_memory::Shmem,
    _holds: PhantomData<T>,
}

fn shmem_err(call: &str, e: shared_memory::ShmemError) -> io::Error {
    io::Error::other(format!("{call}: {e}"))
}

impl<T: Sync> NamedShared<T> {
    /// Create the segment `name` (for example `/shared_value-4242-1a2b`),
    /// exclusively, and move `value` into it.
    pub fn create(name: &str, value: T) -> io::Result<Self> {
        let shmem = shared_memory::ShmemConf::new()
            .os_id(name)
            .size(size_of::<T>().max(1))
            .create()
            .map_err(|e| shmem_err("shm_open(O_CREAT|O_EXCL)", e))?;
        // SAFETY: the fresh mapping is at least `size_of::<T>()` bytes and page aligned.
        unsafe { shmem.as_ptr().cast::<T>().write(value) };
        Ok(NamedShared {
            shmem,
            _holds: PhantomData,
        })
    }

    /// Open the segment another process created under `name`.
    ///
    /// # Safety
    /// The segment must hold a valid `T`, written by its creator.
    pub unsafe fn open(name: &str) -> io::Result<Self> {
        let shmem = shared_memory::ShmemConf::new()
            .os_id(name)
            .open()
            .map_err(|e| shmem_err("shm_open", e))?;
        if shmem.len() < size_of::<T>() {
            return Err(io::Error::other("shm_open: segment smaller than expected"));
        }
        Ok(NamedShared {
            shmem,
            _holds: PhantomData,
        })
    }

    /// Remove the name from `/dev/shm`. The memory stays mapped for every
    /// process that already has it; later `open`s fail.
    pub fn unlink(&mut self) -> io::Result<()> {
        self.shmem.set_owner(false);
        nix::sys::mman::shm_unlink(self.shmem.get_os_id())
            .map_err(|e| io::Error::other(format!("shm_unlink: {e}")))
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.shmem.get_os_id()
    }
}

impl<T> Deref for NamedShared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: created or opened holding a valid `T`; mapped while `self` lives.
        unsafe { &*self.shmem.as_ptr().cast::<T>() }
    }
}

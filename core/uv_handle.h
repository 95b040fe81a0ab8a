#pragma once
// RAII owner of one libuv handle. libuv may still touch a handle until its close
// callback has run, so the handle lives on the heap and is freed in that callback,
// never in the owner's destructor; the owner can therefore die at any time.
#include <uv.h>

#include <utility>

namespace smtpscreen {

template <typename T>
class UvHandle {
public:
    UvHandle() = default;
    // init is e.g. [&](uv_timer_t* t) { return uv_timer_init(loop, t); }
    template <typename Init>
    explicit UvHandle(Init&& init, void* data = nullptr) : handle_(new T{}) {
        if (init(handle_) != 0) {
            delete handle_;  // never initialised: libuv knows nothing of it
            handle_ = nullptr;
            return;
        }
        handle_->data = data;
    }
    ~UvHandle() { close(); }
    UvHandle(UvHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    UvHandle& operator=(UvHandle&& other) noexcept {
        if (this != &other) {
            close();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    UvHandle(const UvHandle&) = delete;
    UvHandle& operator=(const UvHandle&) = delete;

    explicit operator bool() const { return handle_ != nullptr; }
    T* get() const { return handle_; }
    uv_handle_t* handle() const { return reinterpret_cast<uv_handle_t*>(handle_); }
    uv_stream_t* stream() const { return reinterpret_cast<uv_stream_t*>(handle_); }

    // Gives up ownership: the caller must uv_close the handle and free it in the callback.
    T* release() { return std::exchange(handle_, nullptr); }

    void close() {
        if (handle_ == nullptr) return;
        handle_->data = nullptr;  // callbacks that still arrive find no owner
        if (!uv_is_closing(handle())) {
            uv_close(handle(), [](uv_handle_t* h) { delete reinterpret_cast<T*>(h); });
        }
        handle_ = nullptr;
    }

private:
    T* handle_ = nullptr;
};

}  // namespace smtpscreen

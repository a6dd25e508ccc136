// A one-shot rendezvous between a thread of our own (the receipt/store service thread, the
// file I/O pool) and an I/O coroutine: the other thread calls back, the value is posted to
// the coroutine's executor, and the coroutine resumes there (never on the other thread).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>

namespace tresor::common {
namespace asio = boost::asio;

// The callback posts the value to the coroutine's executor and cancels the timer the
// coroutine waits on.
// (A timer rather than async_initiate: g++ 12 double-destroys the initiation lambda's
// captures in use_awaitable's coroutine frame.)
template <typename Result>
struct Rendezvous {
  explicit Rendezvous(asio::any_io_executor exec) : executor(exec), timer(exec) {
    timer.expires_at(asio::steady_timer::time_point::max());
  }
  asio::any_io_executor executor;
  asio::steady_timer timer;
  std::optional<Result> value;
};

template <typename Result>
std::function<void(Result)> resume_on(const std::shared_ptr<Rendezvous<Result>>& r) {
  return [r](Result value) {
    asio::post(r->executor, [r, value = std::move(value)]() mutable {
      r->value = std::move(value);
      r->timer.cancel();
    });
  };
}

template <typename Result>
asio::awaitable<Result> wait_for(std::shared_ptr<Rendezvous<Result>> r) {
  while (!r->value) {
    boost::system::error_code ec;
    co_await r->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return std::move(*r->value);
}

// A rendezvous whose caller may stop waiting at a deadline (a store that does not answer
// must not hold a request past its budget). Exactly one side wins: the other thread
// claims it before delivering (then the caller takes the value, even if its deadline
// passed meanwhile), or the caller abandons it first (then the other thread skips the
// job, or undoes what it did, e.g. gives a hold back).
template <typename Result>
struct Handoff : Rendezvous<Result> {
  using Rendezvous<Result>::Rendezvous;
  enum : int { pending, claimed, abandoned };
  std::atomic<int> state{pending};

  // The other thread: true when the caller still waits (deliver with resume_on now).
  bool claim() {
    int expected = pending;
    return state.compare_exchange_strong(expected, claimed);
  }
  // The other thread, before starting: the caller is gone, do not start.
  bool given_up() const { return state.load() == abandoned; }
};

// The value, or nullopt when `deadline` passed before the other thread claimed the handoff.
template <typename Result>
asio::awaitable<std::optional<Result>> wait_until(std::shared_ptr<Handoff<Result>> h,
                                                  asio::steady_timer::time_point deadline) {
  h->timer.expires_at(deadline);
  while (!h->value) {
    boost::system::error_code ec;
    co_await h->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (h->value || ec) continue;  // delivered (the timer was cancelled)
    int expected = Handoff<Result>::pending;
    if (h->state.compare_exchange_strong(expected, Handoff<Result>::abandoned)) co_return std::nullopt;
    h->timer.expires_at(asio::steady_timer::time_point::max());  // claimed: the value is on its way
  }
  co_return std::move(h->value);
}

}  // namespace tresor::common

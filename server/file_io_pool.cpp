#include "server/file_io_pool.h"

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>

#include <exception>

#include "common/rendezvous.h"

namespace tresor::server {

struct FileIoPool::Impl {
  explicit Impl(unsigned threads) : pool(threads) {}
  boost::asio::thread_pool pool;
};

FileIoPool::FileIoPool(unsigned threads) : impl_(std::make_unique<Impl>(threads ? threads : 1)) {}

FileIoPool::~FileIoPool() { impl_->pool.join(); }

namespace {

// Built outside the coroutine: g++ 12 miscompiles lambdas with captures inside
// coroutines (double destruction).
std::function<void()> pool_task(std::function<void()> job, std::function<void(std::exception_ptr)> done) {
  return [job = std::move(job), done = std::move(done)] {
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    done(error);
  };
}

}  // namespace

boost::asio::awaitable<void> FileIoPool::run(std::function<void()> job) {
  using Result = std::exception_ptr;
  auto rendezvous = std::make_shared<common::Rendezvous<Result>>(co_await boost::asio::this_coro::executor);
  std::function<void()> task = pool_task(std::move(job), common::resume_on(rendezvous));
  boost::asio::post(impl_->pool, std::move(task));
  const Result error = co_await common::wait_for(rendezvous);
  if (error) std::rethrow_exception(error);
}

}  // namespace tresor::server

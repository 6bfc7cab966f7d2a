# Warnings are errors for C++ and CUDA alike. -lineinfo lets Nsight Compute map kernels to source.
# PNEUMO_WERROR=OFF keeps the warnings but lets a host with a newer compiler (whose new warnings
# CI's g++ 12 cannot show) finish its build; the GPU check does that and reports them.
option(PNEUMO_WERROR "Treat warnings as errors" ON)
function(pneumo_set_warnings target)
  if(PNEUMO_WERROR)
    set(cxx_error -Werror)
    set(cuda_error -Werror=all-warnings)
    set(host_error ,-Werror)
  endif()
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic ${cxx_error}>
    $<$<COMPILE_LANGUAGE:CUDA>:${cuda_error} -lineinfo --expt-relaxed-constexpr
      -Xcompiler=-Wall,-Wextra${host_error}>)
endfunction()

// Lint with type information (typescript-eslint's recommendedTypeChecked).
// Formatting is Prettier's job (`npm run format`); this file holds rules that
// find bugs. Each rule turned off or tuned below says why.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  // vitest.mutate.config.ts reads the group list from the untyped stryker.config.mjs, so it is outside the TypeScript project.
  {
    ignores: [
      'node_modules/',
      'build/',
      'dist/',
      'coverage/',
      'reports/',
      '.stryker-tmp/',
      'src/gen/',
      '**/*.js',
      '**/*.mjs',
      '**/*.cjs',
      'vitest.mutate.config.ts',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Plugin contracts and handlers return promises; an async implementation
      // without an await still turns a throw into a rejection, which is the point.
      '@typescript-eslint/require-await': 'off',
      // `_`-prefixed names are deliberately unused (omitted fields, contract arguments).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // `cond && list.push(x)` builds SQL and filter lists.
      '@typescript-eslint/no-unused-expressions': ['error', { allowShortCircuit: true, allowTernary: true }],
      // The datastore stores hand out closures over their statements, not methods that use `this`.
      '@typescript-eslint/unbound-method': 'off',
      // A `let` assigned once, after closures that read it were created, stays `let`.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // Passing on a caught `unknown` is fine; inventing a non-Error is not.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true, allowThrowingAny: true }],
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true, allowThrowingAny: true }],
    },
  },
  {
    // Tests poke at parsed JSON, wire replies and mocks: `any` there is the subject under test.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // Tests throw and reject with plain values to exercise error paths.
      '@typescript-eslint/prefer-promise-reject-errors': 'off',
      '@typescript-eslint/only-throw-error': 'off',
      // Tests stringify values on purpose (redaction checks, messages built from IDs).
      '@typescript-eslint/restrict-template-expressions': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
    },
  },
)

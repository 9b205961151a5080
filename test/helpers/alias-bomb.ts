/** A YAML "billion laughs" document: nine levels of nine aliases, 9^9 (387 million) strings if expanded. */
export function aliasBomb(): string {
  const names = 'abcdefghi';
  const lines = [`${names[0]}: &${names[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]`];
  for (let i = 1; i < names.length; i++) lines.push(`${names[i]}: &${names[i]} [${Array(9).fill(`*${names[i - 1]}`).join(',')}]`);
  return `${lines.join('\n')}\n`;
}
